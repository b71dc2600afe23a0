"""MIL checkpoints: a folder with `model.safetensors` (weights) and `config.json` (how to rebuild and check it).

The JSON holds the model name and kwargs, the task with its label map, the feature name and encoder
description, the spatial context transform the features went through (`mil.SpatialContext`, or null), the feature
standardisation (`mil.FeatureScale`, applied by the model), the training plan, metrics
and library versions. Loading never unpickles.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mil.context import SpatialContext
from mil.models import MILModel, create_model
from mil.scaling import FeatureScale
from mil.tasks import Task, task_from_state
from mil.train import write_json
from wsi.atomic import replace_dir

__all__ = ["Checkpoint", "load_model", "save_model"]

FORMAT = "slidestream.mil-checkpoint/1"
_WEIGHTS, _CONFIG = "model.safetensors", "config.json"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model (eval mode), its task (label map, threshold) and the JSON config."""

    model: MILModel
    task: Task
    config: dict

    @property
    def context(self) -> SpatialContext | None:
        """The spatial context the model's features need (`mil.read_bag`), or None."""
        return SpatialContext.from_dict(self.config.get("context"))


def _versions() -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("slidestream", "numpy", "safetensors", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _encoder_description(encoder) -> dict | None:
    if encoder is None or isinstance(encoder, dict):
        return encoder
    if isinstance(encoder, str):
        return {"encoder": encoder}
    if hasattr(encoder, "describe"):
        return encoder.describe()
    raise TypeError(f"encoder must be a name, a description dict or an Encoder, got {type(encoder).__name__}")


def _is_checkpoint(path: Path) -> bool:
    try:
        return json.loads((path / _CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def save_model(path: str | Path, model: MILModel, task: Task, feature: str | None = None, encoder=None,
               plan: dict | None = None, metrics: dict | None = None,
               context: SpatialContext | None = None) -> Path:  # fmt: skip
    """Write a checkpoint folder at `path`, atomically; an existing folder is replaced only if it is a checkpoint.

    `model` must come from `mil.create_model` (its `spec` says how to rebuild it). `encoder`: an `Encoder`, its
    `describe()` dict or a name; `feature`: the feature name in the patch stores (e.g. "resnet18"); `context`:
    the `mil.SpatialContext` applied to those features before the model (its `in_dim` is the widened one).
    """
    path = Path(path)
    if model.spec is None:
        raise ValueError(
            "the model has no spec: build it with mil.create_model so a checkpoint can rebuild it"
        )
    if path.exists() and not _is_checkpoint(path):
        raise FileExistsError(f"{path} exists and is not a MIL checkpoint; not overwriting it")
    config = {"format": FORMAT, "model": asdict(model.spec), "task": task.state(), "feature": feature,
              "context": context.to_dict() if context is not None else None,
              "encoder": _encoder_description(encoder), "plan": plan, "metrics": metrics,
              "feature_scale": model.feature_scale.to_dict() if model.feature_scale is not None else None,
              "versions": _versions()}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / _WEIGHTS), metadata={"format": FORMAT})
        write_json(tmp / _CONFIG, config)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_model(path: str | Path, in_dim: int | None = None, encoder=None, device: str = "cpu") -> Checkpoint:
    """Rebuild a saved model and task; refuse features of another dimension or another encoder (both named).

    `in_dim`: the dimension of the features it will be given; `encoder`: the encoder that made them (an
    `Encoder`, its description or its name). The encoder's name and, when both sides have one, its weights hash
    must match.
    """
    path = Path(path)
    if not (path / _CONFIG).is_file() or not (path / _WEIGHTS).is_file():
        raise FileNotFoundError(f"{path}: not a MIL checkpoint (needs {_CONFIG} and {_WEIGHTS})")
    config = json.loads((path / _CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    spec = config["model"]
    if in_dim is not None and int(in_dim) != spec["in_dim"]:
        raise ValueError(f"{path}: the model was trained on {spec['in_dim']}-dimensional features "
                         f"({config.get('feature') or 'feature name not recorded'}), "
                         f"but the features given are {in_dim}-dimensional"
                         + (f" (the model's features carry spatial context {config['context']}: "
                            "read them with mil.read_bag and the checkpoint's context)"
                            if config.get("context") else ""))  # fmt: skip
    given = _encoder_description(encoder)
    saved = config.get("encoder")
    if given is not None:
        if saved is None:
            raise ValueError(f"{path}: the checkpoint records no encoder, so it cannot be checked against "
                             f"{given.get('encoder')!r}")  # fmt: skip
        same_name = given.get("encoder") == saved.get("encoder")
        hashes = given.get("weights_hash"), saved.get("weights_hash")
        same_weights = None in hashes or hashes[0] == hashes[1]
        if not (same_name and same_weights):
            raise ValueError(f"{path}: the model was trained on features of encoder {saved.get('encoder')!r} "
                             f"(weights {hashes[1]}), but the features given come from {given.get('encoder')!r} "
                             f"(weights {hashes[0]})")  # fmt: skip
    scale = config.get("feature_scale")
    model = create_model(spec["name"], spec["in_dim"], spec["n_outputs"], **spec["kwargs"])
    model.load_state_dict(load_file(str(path / _WEIGHTS), device="cpu"))
    try:
        model.set_feature_scale(None if scale is None else FeatureScale.from_dict(scale))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; the checkpoint is inconsistent") from None
    return Checkpoint(model.to(device).eval(), task_from_state(config["task"]), config)
