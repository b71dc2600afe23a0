"""Multiple-instance learning: patch encoders (timm and built-in), feature extraction into patch stores, bags.

MIL models, task heads and training arrive in later work; the names here stay.
"""

from mil.bags import Bag, BagBatch, BagDataset, collate_bags, read_labels
from mil.encoders import (
    Encoder,
    EncoderError,
    create_encoder,
    list_encoders,
    load_state_dict,
    register_encoder,
)
from mil.features import extract_features, features_done, resolve_device

__all__ = [
    "Bag",
    "BagBatch",
    "BagDataset",
    "Encoder",
    "EncoderError",
    "collate_bags",
    "create_encoder",
    "extract_features",
    "features_done",
    "list_encoders",
    "load_state_dict",
    "read_labels",
    "register_encoder",
    "resolve_device",
]
