"""Training augmentation for H&E nuclei tiles: geometry on image and labels together, appearance on the image.

Geometry: random crop, flips, 90-degree rotations, scale (0.8-1.25), elastic warp. Appearance: stain jitter in
HED space (per-stain scale and shift after colour deconvolution, then recomposition with stain vectors turned
by a random small angle: the hue of each stain varies between labs as much as its amount),
brightness/contrast/saturation, Gaussian blur, Gaussian noise, JPEG re-encoding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import combine_stains, rgb2hed, rgb_from_hed

__all__ = ["AugmentConfig", "augment", "hed_jitter"]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; `crop` is the output side in pixels."""

    crop: int = 160
    scale: tuple[float, float] = (0.8, 1.25)
    p_scale: float = 0.5
    p_elastic: float = 0.25
    hed_sigma: float = 0.06  # multiplicative jitter of each stain's concentration
    hed_bias: float = 0.02
    hed_hue: float = 0.08  # standard deviation of the change to each stain's unit optical-density vector
    p_blur: float = 0.3
    p_noise: float = 0.3
    p_jpeg: float = 0.3


def hed_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.06, bias: float = 0.02,
               hue: float = 0.0) -> np.ndarray:  # fmt: skip
    """Jitter each stain (H, E, DAB) concentration by a random scale and shift in HED space, and with `hue` > 0
    recompose with the H and E vectors each moved by N(0, hue) per channel (then renormalised); uint8 in and out.
    """
    hed = rgb2hed(image)
    scale = 1.0 + rng.uniform(-sigma, sigma, 3) * np.array([4.0, 4.0, 1.0])
    shift = rng.uniform(-bias, bias, 3) * np.array([1.0, 1.0, 0.3])
    stains = rgb_from_hed.copy()
    if hue > 0:
        for i in (0, 1):
            v = np.abs(stains[i] + rng.normal(0, hue, 3))
            stains[i] = v / np.linalg.norm(v)
    rgb = combine_stains(hed * scale + shift, stains)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _elastic(image, labels: list[np.ndarray], rng, alpha: float, sigma: float):
    """Warp the image (bilinear) and each label map (nearest) by one smooth random displacement field."""
    h, w = labels[0].shape
    dx = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
    dy = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
    yy, xx = np.mgrid[0:h, 0:w]
    coords = [yy + dy, xx + dx]
    out = np.stack(
        [ndi.map_coordinates(image[..., c], coords, order=1, mode="reflect") for c in range(3)], -1
    )
    return out, [ndi.map_coordinates(lab, coords, order=0, mode="reflect") for lab in labels]


def augment(image: np.ndarray, instances: np.ndarray, types: np.ndarray, rng: np.random.Generator,
            config: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One augmented (crop, crop) sample: uint8 RGB image, int32 instances, uint8 types."""
    config = config or AugmentConfig()
    c = config.crop
    h, w = instances.shape
    s = rng.uniform(*config.scale) if rng.random() < config.p_scale else 1.0
    src = int(round(c / s))
    src = min(src, h, w)
    y0, x0 = rng.integers(0, h - src + 1), rng.integers(0, w - src + 1)
    img = image[y0 : y0 + src, x0 : x0 + src]
    inst = instances[y0 : y0 + src, x0 : x0 + src]
    typ = types[y0 : y0 + src, x0 : x0 + src]
    if src != c:
        img = np.asarray(Image.fromarray(img).resize((c, c), Image.BILINEAR))
        idx = (np.arange(c) * src / c).astype(int)
        inst, typ = inst[idx][:, idx], typ[idx][:, idx]
    k = rng.integers(4)
    img, inst, typ = np.rot90(img, k), np.rot90(inst, k), np.rot90(typ, k)
    if rng.random() < 0.5:
        img, inst, typ = img[:, ::-1], inst[:, ::-1], typ[:, ::-1]
    img = np.ascontiguousarray(img)
    if rng.random() < config.p_elastic:
        img, (inst, typ) = _elastic(
            img, [np.ascontiguousarray(inst), np.ascontiguousarray(typ)], rng, 6.0, 6.0
        )
    # appearance
    img = hed_jitter(img, rng, config.hed_sigma, config.hed_bias, config.hed_hue)
    f = img.astype(np.float32)
    f = (f - 128) * rng.uniform(0.85, 1.15) + 128 + rng.uniform(-12, 12)
    gray = f.mean(-1, keepdims=True)
    f = gray + (f - gray) * rng.uniform(0.75, 1.25)
    if rng.random() < config.p_blur:
        f = ndi.gaussian_filter(f, (rng.uniform(0.3, 1.5),) * 2 + (0,))
    if rng.random() < config.p_noise:
        f = f + rng.normal(0, rng.uniform(2, 8), f.shape)
    img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < config.p_jpeg:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(40, 90)))
        img = np.asarray(Image.open(buf).convert("RGB"))
    return img, np.ascontiguousarray(inst).astype(np.int32), np.ascontiguousarray(typ).astype(np.uint8)
