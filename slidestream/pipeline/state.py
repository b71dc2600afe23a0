"""What is already done for each slide of a run, checked on disk before any work starts (no slide opened, no
cluster started): `--dry-run` prints it, and `run_batch` submits only the slides with something left to do."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from slidestream.discovery import SlideInput
from slidestream.pipeline.config import RunConfig

__all__ = ["StepState", "slide_states"]


@dataclass(frozen=True)
class StepState:
    """One step of one slide: "done", "to do", "resume", "repair", "other options" (with `changes`)."""

    status: str
    detail: str = ""
    changes: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.status == "done"

    def describe(self, overwrite: bool) -> str:
        if self.status == "done":
            return "done before, would be redone (--overwrite)" if overwrite else "done before"
        if self.status == "other options":
            what = f"done with other options: {', '.join(self.changes)}, would be rewritten"
            return what if overwrite else f"{what} (needs --overwrite)"
        return f"{self.status} ({self.detail})" if self.detail else self.status


def _tile_state(item: SlideInput, config: RunConfig, store_path: Path) -> StepState:
    from slidestream.pipeline.steps import roi_for
    from tiling import PatchStore, StoreError
    from tiling.inputs import changes, tiling_inputs
    from tiling.store import is_patch_store

    if not store_path.exists():
        return StepState("to do")
    if not is_patch_store(store_path):
        return StepState(
            "to do", f"{store_path} is not a patch store: it is left as it is and the slide fails"
        )
    try:
        store = PatchStore.open(store_path)
    except StoreError as exc:
        return StepState("to do", str(exc))
    options = config.tiling  # a TileOptions: a TilingConfig whose content() leaves out `roi`, the path
    inputs = tiling_inputs(item.path, options, roi_for(options.roi, item.slide_id))
    recorded = store.attrs.get("inputs")
    if not store.is_complete:
        return StepState("resume" if recorded in (None, inputs) else "to do", "partial store")
    if recorded != inputs:
        return StepState("other options", changes=tuple(changes(recorded, inputs)))
    missing = store.missing_chunks()
    if missing:
        n = sum(len(keys) for keys in missing.values())
        return StepState("repair", f"damaged: {n} chunk(s) missing in {', '.join(sorted(missing))}")
    for name in ("tissue.geojson", "thumbnail.png", "tissue_mask.png", "stitch.png"):
        if not (store_path.parent / name).exists():
            return StepState("to do", f"{name} missing")
    return StepState("done")


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()  # as mil.encoders records weights, without importing torch here
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _features_state(config: RunConfig, store_path: Path) -> StepState:
    from tiling import PatchStore

    name = config.features.encoder
    store = PatchStore.open(store_path)
    if name not in store.feature_names():
        return StepState("to do")
    array = store.features(name)
    description = array.attrs.get("description", {})
    weights = config.features.weights
    same = description.get("encoder") == name and description.get("store") == store.attrs.get("fingerprint")
    if weights is not None:
        same = (
            same and Path(weights).is_file() and description.get("weights_hash") == _file_hash(Path(weights))
        )
    else:
        same = same and len(str(description.get("weights_hash", ""))) != 16  # no weights file then either
    if not same:
        return StepState("to do", f"features/{name} came from another encoder, weights or store")
    if not array.attrs.get("complete"):
        return StepState("to do", "partial")
    if not store.rows_intact("features", name):
        return StepState("repair", f"damaged: features/{name} has chunk(s) missing")
    return StepState("done")


def slide_states(
    item: SlideInput, config: RunConfig, done_in_manifest: set[tuple[str, str]]
) -> dict[str, StepState]:
    """The state of each configured step of `item`. Steps this module does not know (plug-ins) count as done when
    the manifest says so, their outputs exist and, where the step has `is_current(ctx)`, it says they were made
    with this run's options. `config.overwrite` is not applied here (see `describe`)."""
    from slidestream.pipeline.steps import STEPS, SlideContext

    folder = config.out / "slides" / item.slide_id
    store_path = folder / "patches.zarr"
    states: dict[str, StepState] = {}
    for step in config.steps:
        if any(
            s.status not in ("done", "repair") for s in states.values()
        ):  # a repaired store keeps the rest
            states[step] = StepState("to do", "after an earlier step")
        elif step == "tile":
            states[step] = _tile_state(item, config, store_path)
        elif step == "features":
            states[step] = _features_state(config, store_path)
        else:
            ctx = SlideContext(item.slide_id, Path(item.path), folder, config)
            present = all(path.exists() for path in STEPS[step].outputs(ctx))
            done = (item.slide_id, step) in done_in_manifest and present
            is_current = getattr(STEPS[step], "is_current", None)  # optional: made with these options?
            if done and is_current is not None and not is_current(ctx):
                states[step] = StepState("to do", "made with other options")
            else:
                states[step] = StepState("done" if done else "to do")
    return states
