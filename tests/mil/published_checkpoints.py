"""Random checkpoints in the published layouts of tests/mil/encoder_layouts/*.json (see its README)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

LAYOUTS = Path(__file__).parent / "encoder_layouts"
NAMES = sorted(p.stem for p in LAYOUTS.glob("*.json"))


def layout(name: str, depth: int | None = None) -> dict[str, list[int]]:
    """key -> shape of the published checkpoint (every stack of blocks cut to `depth` blocks if given)."""
    manifest = json.loads((LAYOUTS / f"{name}.json").read_text())
    shapes = dict(manifest["keys"])
    for group in manifest["groups"]:
        count = group["count"]
        if depth is not None:
            count = min(count, depth)
        for i in range(count):
            keys = {**group["keys"], **(group.get("first", {}) if i == 0 else {}),
                    **(group.get("odd", {}) if i % 2 else {})}  # fmt: skip
            shapes.update({group["prefix"].format(i=i) + k: s for k, s in keys.items()})
    return shapes


def published_state(name: str, depth: int | None = None, seed: int = 0, device: str = "cpu") -> dict:
    shapes = layout(name, depth)
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith(("num_batches_tracked", "relative_position_index")):
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = 1 + torch.rand(shape, generator=gen)
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.05
    return state


def write_checkpoint(name: str, path: Path, depth: int | None = None, seed: int = 0) -> Path:
    """A random checkpoint in the published file's format (safetensors, torch, or CTransPath's wrapper)."""
    manifest = json.loads((LAYOUTS / f"{name}.json").read_text())
    state = published_state(name, depth, seed)
    if manifest["published_file"].endswith(".safetensors"):
        from safetensors.torch import save_file

        path = path.with_suffix(".safetensors")
        save_file(state, str(path))
    else:
        path = path.with_suffix(".pth")
        torch.save({manifest["wrapper"]: state} if "wrapper" in manifest else state, path)
    return path
