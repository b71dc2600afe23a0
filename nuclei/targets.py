"""Training targets from instance labels: foreground, HoVer-Net horizontal / vertical distance maps, types."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["hv_maps"]


def hv_maps(instances: np.ndarray) -> np.ndarray:
    """(2, H, W) float32: each nucleus pixel's x and y offset from its nucleus centroid, scaled to [-1, 1].

    Channel 0 is horizontal (x), channel 1 vertical (y); each nucleus is scaled by its own largest offset on
    each side, as in HoVer-Net, so boundaries between touching nuclei become sharp jumps in the maps.
    """
    if instances.ndim != 2:
        raise ValueError(f"instances must be (H, W), got {instances.shape}")
    out = np.zeros((2, *instances.shape), np.float32)
    for lab, sl in enumerate(ndi.find_objects(instances), start=1):
        if sl is None:
            continue
        m = instances[sl] == lab
        yy, xx = np.nonzero(m)
        for ch, coord in ((0, xx), (1, yy)):
            d = coord - coord.mean()
            neg, pos = -d.min() if d.min() < 0 else 1.0, d.max() if d.max() > 0 else 1.0
            d = np.where(d < 0, d / neg, d / pos)
            out[ch][sl][yy, xx] = d
    return out
