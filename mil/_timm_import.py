"""Import timm on machines whose torchvision wheel does not match a CPU-only torch.

There, `import torchvision` fails with "operator torchvision::nms does not exist": the wheel registers fake
kernels for ops whose schemas its missing C++ library would have declared. Declaring the two schemas it needs
(nms, qnms) on a library object kept alive here lets it import; nothing in this project calls those ops. Where a
matching torchvision exists the first import succeeds and nothing is changed.
"""

from __future__ import annotations

import sys

import torch

_LIBRARY: torch.library.Library | None = None  # must outlive the import: dropping it removes the schemas


def _declare_torchvision_ops() -> None:
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def import_timm():
    """`timm`, importing torchvision first with the CPU fix when needed."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _declare_torchvision_ops()
        import torchvision  # noqa: F401
    import timm

    return timm
