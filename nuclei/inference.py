"""Running a nuclei model on an image at the model's resolution: tiled forward passes, maps, instances."""

from __future__ import annotations

import numpy as np
import torch

from nuclei.model import NucleiNet, pad_to_stride, thresholds
from nuclei.postprocess import PostprocessConfig, instances_from_maps

__all__ = ["FLIPS", "forward_maps", "predict_instances", "predict_maps", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch understands it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _tile_starts(n: int, tile: int, margin: int) -> list[int]:
    """Tile origins along one axis so that every pixel lies at least `margin` inside some tile (or at an edge)."""
    if n <= tile:
        return [0]
    step = tile - 2 * margin
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


@torch.no_grad()
def predict_maps(model: NucleiNet, image: np.ndarray, device: str | torch.device = "cpu", tile: int = 512,
                 margin: int = 32, batch_size: int = 4, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Nucleus probability (H, W) and HV maps (2, H, W) of an (H, W, 3) uint8 image at the model's mpp.

    Large images run in `tile`-px tiles overlapping by 2 * `margin`; each pixel is taken from the tile in which
    it lies deepest inside, so nuclei up to `margin` px from a tile edge see their whole context. `tta`
    averages the four flips (`forward_maps`; 4 forward passes; about 3.5x the end-to-end time of `segment` on CPU).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    device = resolve_device(device)
    padded, (h, w) = pad_to_stride(image, model.stride)
    ph, pw = padded.shape[:2]
    tile = max(model.stride, tile - tile % model.stride)
    th, tw = min(tile, ph), min(tile, pw)
    prob = np.zeros((ph, pw), np.float32)
    hv = np.zeros((2, ph, pw), np.float32)
    boxes = [(y, x) for y in _tile_starts(ph, th, margin) for x in _tile_starts(pw, tw, margin)]
    model = model.to(device).eval()
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        batch = np.stack([padded[y : y + th, x : x + tw] for y, x in chunk])
        x_t = model.normalise(torch.from_numpy(batch).permute(0, 3, 1, 2).to(device))
        p_t, v_t, _ = forward_maps(model, x_t, tta)
        p, v = p_t.cpu().numpy(), v_t.cpu().numpy()
        for (y, x), pi, vi in zip(chunk, p, v, strict=True):
            # Inner region this tile owns: up to the midpoint of the overlap with each neighbour.
            y0 = 0 if y == 0 else y + margin
            x0 = 0 if x == 0 else x + margin
            y1 = ph if y + th >= ph else y + th - margin
            x1 = pw if x + tw >= pw else x + tw - margin
            prob[y0:y1, x0:x1] = pi[y0 - y : y1 - y, x0 - x : x1 - x]
            hv[:, y0:y1, x0:x1] = vi[:, y0 - y : y1 - y, x0 - x : x1 - x]
    return prob[:h, :w], hv[:, :h, :w]


FLIPS = ((False, False), (False, True), (True, False), (True, True))  # (flip rows, flip columns)


def forward_maps(model: NucleiNet, x: torch.Tensor, tta: bool = False, types: bool = False):
    """Float32 probability (B, H, W), HV (B, 2, H, W) and, with `types`, type probabilities (B, K, H, W) (else
    None) of a normalised batch `x` (B, 3, H, W); with `tta`, each is the mean over the four flips of the
    input, flipped back (HV's x sign flipped back under a column flip, y under a row flip): 4 forward passes."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be a normalised (B, 3, H, W) batch, got {tuple(x.shape)}")
    views = FLIPS if tta else FLIPS[:1]
    prob_sum = hv_sum = types_sum = None  # running sums: one copy of each output, not one per flip
    for fy, fx in views:
        dims = [d for d, f in ((2, fy), (3, fx)) if f]
        out = model(torch.flip(x, dims) if dims else x)
        p, hv = torch.sigmoid(out.logits[:, 0].float()), out.hv.float()
        t = torch.softmax(out.types.float(), dim=1) if types and out.types is not None else None
        if dims:
            p, hv = torch.flip(p, [d - 1 for d in dims]), torch.flip(hv, dims)
            t = None if t is None else torch.flip(t, dims)
        if fx or fy:
            sign = torch.tensor([-1.0 if fx else 1.0, -1.0 if fy else 1.0], device=hv.device).view(1, 2, 1, 1)
            hv = hv * sign
        prob_sum = p if prob_sum is None else prob_sum.add_(p)
        hv_sum = hv.clone() if hv_sum is None else hv_sum.add_(hv)  # hv may be the network's own output
        if t is not None:
            types_sum = t if types_sum is None else types_sum.add_(t)
    if len(views) == 1:
        return prob_sum, hv_sum, types_sum
    n = float(len(views))
    return prob_sum.div_(n), hv_sum.div_(n), None if types_sum is None else types_sum.div_(n)


def predict_instances(model: NucleiNet, image: np.ndarray, device: str | torch.device = "cpu",
                      postprocess: PostprocessConfig | None = None, tta: bool = False) -> np.ndarray:  # fmt: skip
    """(H, W) int32 instances of an image already at the model's mpp; `postprocess` None uses the model's own
    thresholds (`model.postprocess`), else the defaults; `tta` as for `predict_maps`."""
    prob, hv = predict_maps(model, image, device=device, tta=tta)
    return instances_from_maps(prob, hv, thresholds(model, postprocess))
