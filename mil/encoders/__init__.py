"""Patch encoders by name: weight-free built-ins, published pathology foundation models (recipes), and any timm
architecture, as pooled feature extractors with their own preprocessing.

    encoder = mil.create_encoder("uni_v1", weights="pytorch_model.bin")          # a published recipe
    encoder = mil.create_encoder("resnet50", weights="resnet50.safetensors")     # any timm architecture
    encoder = mil.create_encoder("vit_small_patch16_224", random_weights=True)   # for testing only
    encoder = mil.create_encoder("stain_stats")                                  # built in, no weights
    encoder = mil.create_encoder("morphometry", mpp=0.5)                         # built in, measured (numpy)
    mil.list_encoders(details=True)   # dim, input size, recommended mpp, licence, where the weights are

Encoders take uint8 RGB batches (B, 3, H, W), resize them to their input size when they have one, normalise
with their own mean / std, and return (B, dim) features. Weights come from local files only: safetensors, or a
torch state dict read with weights_only=True. Built-ins live in `builtin`; `morphometry`'s measurements are
numpy code of their own (`mil.encoders.morphometry`, callable on (N, H, W, 3) arrays). One file per family of
recipes: timm ViTs (`timm_vit`), `transformers` ViTs (`hf_vit`), Swin with a convolutional stem
(`swin_convstem`), truncated ResNet (`resnet_trunc`).
"""

from mil.encoders import builtin, hf_vit, resnet_trunc, swin_convstem, timm_vit  # noqa: F401  (registration)
from mil.encoders.base import Encoder, EncoderError
from mil.encoders.factory import create_encoder, needs_weights, require_weights
from mil.encoders.loading import closest_recipes, fit_checkpoint, recipe_layout
from mil.encoders.recipe import Recipe
from mil.encoders.registry import (
    EncoderInfo,
    encoder_table,
    get_recipe,
    list_encoders,
    list_recipes,
    register_encoder,
    register_recipe,
)
from mil.encoders.weights import load_state_dict

__all__ = [
    "Encoder",
    "EncoderError",
    "EncoderInfo",
    "Recipe",
    "closest_recipes",
    "create_encoder",
    "encoder_table",
    "fit_checkpoint",
    "get_recipe",
    "list_encoders",
    "list_recipes",
    "load_state_dict",
    "needs_weights",
    "recipe_layout",
    "register_encoder",
    "register_recipe",
    "require_weights",
]
