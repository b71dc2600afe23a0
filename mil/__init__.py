"""Multiple-instance learning: patch encoders (timm and built-in), feature extraction into patch stores, bags
(with optional spatial context), MIL models (a registry), tasks (binary, multiclass, grade, mutation, survival), the training loop with
cross-validation, a scikit-learn estimator and checkpoints.
"""

from mil.bags import Bag, BagBatch, BagDataset, collate_bags, read_bag, read_labels
from mil.checkpoint import Checkpoint, load_model, save_model
from mil.context import SpatialContext
from mil.encoders import (
    Encoder,
    EncoderError,
    create_encoder,
    list_encoders,
    load_state_dict,
    register_encoder,
)
from mil.estimator import MILEstimator
from mil.features import encoder_arguments, extract_features, features_done, resolve_device
from mil.models import MILModel, MILOutput, ModelSpec, create_model, list_models, register_model
from mil.scaling import FeatureScale
from mil.tasks import Task, create_task, list_tasks, register_task
from mil.train import CVResult, FitConfig, InMemoryBags, as_bags, cross_validate, fit, plan, predict_logits

__all__ = [
    "Bag",
    "BagBatch",
    "BagDataset",
    "CVResult",
    "Checkpoint",
    "Encoder",
    "EncoderError",
    "FeatureScale",
    "FitConfig",
    "InMemoryBags",
    "MILEstimator",
    "MILModel",
    "MILOutput",
    "ModelSpec",
    "SpatialContext",
    "Task",
    "as_bags",
    "collate_bags",
    "create_encoder",
    "create_model",
    "create_task",
    "cross_validate",
    "encoder_arguments",
    "extract_features",
    "features_done",
    "fit",
    "list_encoders",
    "list_models",
    "list_tasks",
    "load_model",
    "load_state_dict",
    "plan",
    "predict_logits",
    "read_bag",
    "read_labels",
    "register_encoder",
    "register_model",
    "register_task",
    "resolve_device",
    "save_model",
]
