"""Weights files: reading a local state dict, its short hash, and comparing its keys with a model's."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mil.encoders.base import EncoderError

__all__ = ["KeyCheck", "check_keys", "file_hash", "key_pattern", "load_state_dict", "show_keys"]

_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "trunk.")


def file_hash(path: str | Path) -> str:
    """The first 16 hex digits of the file's sha256: short enough for a table, long enough to tell files apart."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local safetensors file or a torch checkpoint (weights_only=True; "state_dict" /
    "model" / "teacher" wrappers unpacked). A prefix every key shares, such as "module.", is stripped."""
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


def key_pattern(key: str) -> str:
    """A key with its block numbers replaced by '#': layouts compare whatever their depth."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "#", key)


def show_keys(keys: list[str], limit: int = 6) -> str:
    """A few keys and how many there are in all."""
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


@dataclass(frozen=True)
class KeyCheck:
    """How a state dict fits a model: keys it lacks, keys it has on top, and keys whose shapes differ."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]  # "key (file S1, model S2)"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def message(self) -> str:
        """The keys that differ, a few of each kind with their counts; kinds with none are left out."""
        parts = []
        if self.missing:
            parts.append(f"missing keys [{show_keys(self.missing)}]")
        if self.unexpected:
            parts.append(f"unexpected keys [{show_keys(self.unexpected)}]")
        if self.wrong_shape:
            parts.append(f"keys with other shapes [{show_keys(self.wrong_shape, 4)}]")
        return "; ".join(parts)


def check_keys(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> KeyCheck:
    """Compare `state` with a model's `expected` key -> shape."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} (file {tuple(state[k].shape)}, model {expected[k]})" for k in expected
             if k in state and tuple(state[k].shape) != tuple(expected[k])]  # fmt: skip
    return KeyCheck(missing, unexpected, wrong)
