"""`Encoder`: a patch feature extractor with its preprocessing, and `EncoderError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RANDOM_WEIGHTS", "Encoder", "EncoderError"]

RANDOM_WEIGHTS = "random-init-seed-0"  # the weights hash of a random initialisation


class EncoderError(Exception):
    """An encoder cannot be built: unknown name, bad weights file, keys that do not match, hub unreachable,
    or no weights where they are needed."""


class Encoder(nn.Module):
    """A patch feature extractor with its preprocessing. `input_size` None means any tile size is used as is.

    `random_weights` marks features from a random initialisation (useless for a study; they say so wherever
    they are written). `arguments` are the architecture's keyword arguments and `mpp` the resolution the
    weights were trained at (None: any); both go into `describe()`.
    """

    def __init__(self, name: str, model: nn.Module, dim: int, input_size: int | None, mean, std,
                 weights_hash: str, architecture: str, *, random_weights: bool = False,
                 arguments: Mapping[str, Any] | None = None, mpp: float | None = None):  # fmt: skip
        super().__init__()
        self.name = name
        self.model = model.eval()
        self.dim = int(dim)
        self.input_size = input_size
        self.weights_hash = weights_hash
        self.architecture = architecture
        self.random_weights = bool(random_weights)
        self.arguments = dict(arguments or {})
        self.mpp = mpp
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

    @property
    def weights_label(self) -> str:
        """The weights as tables show them: the file's short hash, "RANDOM WEIGHTS", or "no weights"."""
        if self.random_weights:
            return "RANDOM WEIGHTS"
        return "no weights" if self.weights_hash == "none" else self.weights_hash

    def describe(self) -> dict:
        """What decides the features: stored in the store's attrs so other encoders' features are never mixed."""
        return {"encoder": self.name, "architecture": self.architecture, "weights_hash": self.weights_hash,
                "random_weights": self.random_weights, "arguments": _plain(self.arguments),
                "dim": self.dim, "input_size": self.input_size,
                "mean": [round(float(v), 6) for v in self.mean.flatten()],
                "std": [round(float(v), 6) for v in self.std.flatten()]}  # fmt: skip


def _plain(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as JSON values (zarr attrs): classes and functions by their qualified name."""
    out = {}
    for key, value in sorted(arguments.items()):
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [v if isinstance(v, bool | int | float | str) else repr(v) for v in value]
        else:
            out[key] = getattr(value, "__qualname__", None) or repr(value)
    return out
