"""What runs on each slide tile: the CNN (batched forward here, post-processing in workers) or the classical
baseline (all in workers). A segmenter's `maps` runs in the calling process; `postprocess_tile` is a plain
function of picklable arguments, so a process pool can run it.

A segmenter has `kind`, `mpp`, `classes` (type names, index 0 background; empty: no types), `postprocess`,
`describe()` (a JSON-able dict that identifies its results) and `maps(images)` -> one `TileWork` per image;
any other segmenter can hand over finished instance labels as `TileWork("labels", image, labels=...)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from nuclei.classical import segment_classical
from nuclei.inference import forward_maps, resolve_device
from nuclei.measure import Placement, measure_instances
from nuclei.model import NucleiNet, pad_to_stride, thresholds
from nuclei.postprocess import PostprocessConfig, instances_from_maps

__all__ = ["ClassicalSegmenter", "CnnSegmenter", "TileWork", "postprocess_tile"]


@dataclass(frozen=True)
class TileWork:
    """What a worker needs for one tile: the maps (or None for the classical baseline) and the image."""

    kind: str  # "cnn", "classical" or "labels"
    image: np.ndarray  # (H, W, 3) uint8 at the segmenter's mpp
    prob: np.ndarray | None = None  # (H, W) float32
    hv: np.ndarray | None = None  # (2, H, W) float32
    types: np.ndarray | None = None  # (K, H, W) float16 class probabilities
    labels: np.ndarray | None = None  # (H, W) int32 instances, for kind "labels"


class CnnSegmenter:
    """The nuclei CNN: `maps` runs the network on a batch of tiles; post-processing is `postprocess_tile`, with
    `postprocess` if given, else the model's own thresholds (`model.postprocess`), else the defaults. `tta`
    averages the maps (and type probabilities) over the four flips (`nuclei.inference.forward_maps`: 4 forward
    passes); it is part of `describe()` when on, so results with and without it are never mixed."""

    kind = "cnn"

    def __init__(self, model: NucleiNet, device: str | torch.device = "auto",
                 postprocess: PostprocessConfig | None = None, tta: bool = False):  # fmt: skip
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.postprocess = thresholds(model, postprocess)
        self.tta = bool(tta)

    @property
    def mpp(self) -> float:
        return self.model.config.mpp

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.config.classes if self.model.config.n_types else ()

    def describe(self) -> dict:
        config = self.model.config
        return {"kind": "cnn", "encoder": config.encoder, "mpp": config.mpp,
                "provenance": getattr(self.model, "provenance", {}).get("command", ""),
                "weights": _weights_digest(self.model), "postprocess": asdict(self.postprocess),
                **({"tta": True} if self.tta else {})}  # fmt: skip

    @torch.inference_mode()
    def maps(self, images: np.ndarray) -> list[TileWork]:
        """(B, H, W, 3) uint8 -> one TileWork per image with probability, HV and type maps."""
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (B, H, W, 3) uint8, got {images.dtype} {images.shape}")
        h, w = images.shape[1:3]
        padded = np.stack([pad_to_stride(im, self.model.stride)[0] for im in images])
        x = torch.from_numpy(padded).permute(0, 3, 1, 2).to(self.device)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            prob_t, hv_t, types_t = forward_maps(self.model, self.model.normalise(x), self.tta, types=True)
        prob = prob_t[:, :h, :w].cpu().numpy()
        hv = hv_t[:, :, :h, :w].cpu().numpy()
        types = None if types_t is None else types_t[:, :, :h, :w].half().cpu().numpy()
        return [TileWork("cnn", images[i], prob[i], hv[i], None if types is None else types[i])
                for i in range(len(images))]  # fmt: skip


class ClassicalSegmenter:
    """The classical baseline (`segment_classical`) at `mpp` um/px; no nucleus types."""

    kind = "classical"
    classes: tuple[str, ...] = ()
    postprocess = None

    def __init__(self, mpp: float = 0.5):
        self.mpp = float(mpp)

    def describe(self) -> dict:
        return {"kind": "classical", "mpp": self.mpp}

    def maps(self, images: np.ndarray) -> list[TileWork]:
        return [TileWork("classical", im) for im in images]


def _weights_digest(model: NucleiNet) -> str:
    """A short digest of the model's parameters: results of other weights are never mixed on resume."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def postprocess_tile(work: TileWork, placement: Placement, classes: tuple[str, ...], mpp: float,
                     postprocess: PostprocessConfig | None) -> dict[str, list]:  # fmt: skip
    """Instances of one tile and the table columns of those whose centroid the tile owns (runs in a worker)."""
    types = work.types.astype(np.float32) if work.types is not None else None
    if work.kind == "labels":
        labels = work.labels
    elif work.kind == "classical":
        labels = segment_classical(work.image, mpp=mpp)
    else:
        labels = instances_from_maps(work.prob, work.hv, postprocess)
    return measure_instances(labels, work.image, placement, types, classes)
