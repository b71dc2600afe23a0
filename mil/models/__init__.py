"""MIL models, one file per family, in a registry: `create_model(name, in_dim, n_outputs, **kwargs)`."""

from mil.models import abmil, clam, dsmil, pooling, transmil  # noqa: F401 - registers the models
from mil.models._base import MILModel, MILOutput, ModelSpec, make_head
from mil.models._registry import create_model, list_models, register_model

__all__ = ["MILModel", "MILOutput", "ModelSpec", "create_model", "list_models", "make_head", "register_model"]
