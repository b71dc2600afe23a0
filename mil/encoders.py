"""Patch encoders: any timm model as a pooled feature extractor, plus weight-free built-ins, one registry.

    encoder = mil.create_encoder("resnet50", weights="resnet50.safetensors")
    encoder = mil.create_encoder("vit_large_patch16_224", weights="uni.bin", init_values=1e-5)   # UNI-style
    encoder = mil.create_encoder("stain_stats")                                                  # no weights

Encoders take uint8 RGB batches (B, 3, H, W), resize them to their input size when they have one, normalise
with their own mean / std, and return (B, dim) features. Weights come from local files only: safetensors, or a
torch state dict read with weights_only=True.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mil._timm_import import import_timm
from mil.stain_stats import StainStats

__all__ = [
    "Encoder",
    "EncoderError",
    "create_encoder",
    "list_encoders",
    "load_state_dict",
    "register_encoder",
]

_REGISTRY: dict[str, Callable[..., Encoder]] = {}
_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.", "last_linear.")
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "trunk.")


class EncoderError(Exception):
    """An encoder cannot be built: unknown name, bad weights file, keys that do not match, hub unreachable."""


class Encoder(nn.Module):
    """A patch feature extractor with its preprocessing. `input_size` None means any tile size is used as is."""

    def __init__(self, name: str, model: nn.Module, dim: int, input_size: int | None, mean, std,
                 weights_hash: str, architecture: str):  # fmt: skip
        super().__init__()
        self.name = name
        self.model = model.eval()
        self.dim = int(dim)
        self.input_size = input_size
        self.weights_hash = weights_hash
        self.architecture = architecture
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float (B, 3, S, S) at the encoder's input size."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"encoder {self.name} expects (B, 3, H, W) images, got {tuple(images.shape)}")
        if images.device.type == "cpu":
            images = images.contiguous()  # NHWC views from the store make every CPU kernel slower
        # A new tensor either way, so the in-place steps below never touch the caller's data.
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.to(torch.float32, copy=True)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                              align_corners=False)  # fmt: skip
        return x.sub_(self.mean).div_(self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model(self.preprocess(images))
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"encoder {self.name} returned {tuple(features.shape)}, expected (B, {self.dim})"
            )
        return features

    def describe(self) -> dict:
        """What decides the features: stored in the store's attrs so other encoders' features are never mixed."""
        return {"encoder": self.name, "architecture": self.architecture, "weights_hash": self.weights_hash,
                "dim": self.dim, "input_size": self.input_size,
                "mean": [round(float(v), 6) for v in self.mean.flatten()],
                "std": [round(float(v), 6) for v in self.std.flatten()]}  # fmt: skip


def register_encoder(fn: Callable[..., Encoder]) -> Callable[..., Encoder]:
    """Register a built-in encoder factory under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_encoders() -> list[str]:
    """Built-in encoders; any timm architecture name also works with `create_encoder`."""
    return sorted(_REGISTRY)


@register_encoder
def stain_stats(weights: str | Path | None = None) -> Encoder:
    """H&E stain statistics, colour histograms and texture (53 features, no weights)."""
    if weights is not None:
        raise EncoderError("stain_stats has no weights")
    return Encoder(
        "stain_stats", StainStats(), StainStats.dim, None, (0, 0, 0), (1, 1, 1), "none", "stain_stats"
    )


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local safetensors file or a torch checkpoint (weights_only=True; "state_dict" /
    "model" wrappers unpacked). A common prefix such as "module." is stripped."""
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EncoderError(f"{path}: cannot read weights ({exc})") from exc
    for key in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderError(f"{path}: not a state dict of tensors")
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _hub_name(name: str) -> bool:
    return name.startswith(("hf-hub:", "hf_hub:", "timm/"))


def create_encoder(
    name: str, weights: str | Path | None = None, pretrained: bool = False, **kwargs
) -> Encoder:
    """A built-in encoder, or timm architecture `name` with `weights` from a local file.

    Extra keyword arguments go to `timm.create_model` (e.g. `init_values=1e-5`, `dynamic_img_size=True`).
    `pretrained=True` or an "hf-hub:" name downloads from the Hugging Face hub where it is reachable; offline
    (HF_HUB_OFFLINE=1, or no network) it fails at once with advice to pass a local file.
    """
    if name in _REGISTRY:
        return _REGISTRY[name](weights=weights, **kwargs)
    timm = import_timm()
    wants_hub = pretrained or _hub_name(name)
    if wants_hub and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise EncoderError(f"{name}: downloading pretrained weights needs the Hugging Face hub, and HF_HUB_OFFLINE "
                           "is set; download the checkpoint elsewhere and pass weights=FILE (--weights FILE) with "
                           "the timm architecture name")  # fmt: skip
    if not wants_hub and not timm.is_model(name):
        raise EncoderError(f"unknown encoder {name!r}: not built in ({', '.join(list_encoders())}) and not a timm "
                           "architecture (see timm.list_models())")  # fmt: skip
    seed_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # a random initialisation is at least reproducible
    try:
        model = timm.create_model(name, pretrained=wants_hub, num_classes=0, **kwargs)
    except Exception as exc:
        if wants_hub:
            raise EncoderError(
                f"{name}: could not fetch pretrained weights ({exc}); pass weights=FILE"
            ) from exc
        raise EncoderError(f"{name}: timm could not build it ({exc})") from exc
    finally:
        torch.random.set_rng_state(seed_state)
    if weights is not None:
        state = load_state_dict(weights)
        result = model.load_state_dict(state, strict=False)
        unexpected = [k for k in result.unexpected_keys if not k.startswith(_HEAD_PREFIXES)]
        if result.missing_keys or unexpected:

            def show(keys):
                return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

            raise EncoderError(f"{weights}: weights do not fit timm {name!r}: missing keys [{show(result.missing_keys)}]; "
                               f"unexpected keys [{show(unexpected)}]")  # fmt: skip
        weights_hash = _file_hash(Path(weights))
    elif wants_hub:
        weights_hash = f"hub:{name}"
    else:
        warnings.warn(f"encoder {name}: no weights given, using a random initialisation (seed 0); features are "
                      "reproducible but not pretrained", stacklevel=2)  # fmt: skip
        weights_hash = "random-init-seed-0"
    config = timm.data.resolve_data_config({}, model=model)
    size = config["input_size"][-1]
    return Encoder(name, model, model.num_features, size, config["mean"], config["std"], weights_hash, name)
