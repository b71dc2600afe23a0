"""What a patch store was made from (slide content and tiling options), and when an existing store may be replaced.

A slide is known by its content (its size and a hash of its first bytes: the header and first tiles), not by its
path or modification time, so a moved or copied folder of slides is recognised as the same slides. A complete store
records its `inputs`; a store made from other inputs is replaced only when overwriting was asked for, and the error
says which inputs differ.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from tiling.config import TilingConfig
from tiling.store import PatchStore, StoreError, is_patch_store

__all__ = [
    "IDENTITY_BYTES",
    "OptionsChanged",
    "changes",
    "prepare_store_path",
    "slide_identity",
    "tiling_inputs",
]

IDENTITY_BYTES = 4 << 20  # a slide's header and first tiles: milliseconds to read, unique in practice


class OptionsChanged(StoreError):
    """A complete store at the output path was made from other inputs; the message names them."""

    def __init__(self, path: Path, differences: list[str]):
        self.path, self.differences = path, differences
        super().__init__(
            f"{path}: results made with other options ({'; '.join(differences)}); not replacing them without "
            "overwrite (--overwrite), or write these results to another output folder (-o)"
        )


def slide_identity(path: str | Path) -> dict:
    """A slide file's identity by content: {"size": bytes, "sha256": hash of its first IDENTITY_BYTES}."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(IDENTITY_BYTES))
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()[:32]}


def tiling_inputs(slide_path: str | Path, config: TilingConfig, roi: BaseGeometry | None,
                  identity: dict | None = None) -> dict:  # fmt: skip
    """What decides a store's content: the slide's identity (`identity` when the caller has it already, else
    `slide_identity(slide_path)`), `config.content()` (the tiling options, slide_mpp included; not how the work
    runs) and a hash of the ROI geometry."""
    options = config.content()
    slide_mpp = options.pop("slide_mpp")
    roi_hash = hashlib.sha256(roi.wkb).hexdigest()[:16] if roi is not None else None
    identity = identity if identity is not None else slide_identity(slide_path)
    return {"slide": identity, **options, "roi": roi_hash, "slide_mpp": slide_mpp}


def changes(old: dict | None, new: dict) -> list[str]:
    """Readable differences between two `tiling_inputs` ("mpp 0.25 -> 0.5"); old None: unknown options."""
    if old is None:
        return ["made by an earlier slidestream version that did not record its options"]
    found = []
    for key in new:
        if old.get(key) != new[key]:
            if key == "slide":
                found.append("another slide's content under this slide id")
            elif key == "roi":
                found.append("another ROI" if old.get(key) and new[key] else f"{_shown(key, old.get(key))} -> "
                             f"{_shown(key, new[key])}")  # fmt: skip
            else:
                found.append(
                    f"{key.replace('_', '-')} {_shown(key, old.get(key))} -> {_shown(key, new[key])}"
                )
    return found


def _shown(key: str, value) -> str:
    """An option's value as a user reads it: None is the option's default (stride = the tile size, no
    magnification, ...), switches are on / off, a ROI is its presence (its hash means nothing to a reader)."""
    if key == "roi":
        return "a ROI" if value else "no ROI"
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def prepare_store_path(path: str | Path, inputs: dict, overwrite: bool) -> None:
    """Clear `path` for a new store, or refuse: never anything but a patch store, and a complete store made from
    other inputs only with `overwrite` (`OptionsChanged`). Partial stores, and stores of the same inputs that are
    damaged beyond repair, are ours to replace."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not is_patch_store(path):
        raise StoreError(f"{path} exists and is not a slidestream patch store; it was left as it is "
                         "(move it, or write the store somewhere else)")  # fmt: skip
    store = PatchStore.open(path)
    if store.is_complete and not overwrite:
        recorded = store.attrs.get("inputs")
        if recorded != inputs:
            raise OptionsChanged(path, changes(recorded, inputs))
    shutil.rmtree(path)
