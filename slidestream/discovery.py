"""Finding slides in the paths a user gives, and naming them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wsi import SLIDE_EXTENSIONS
from wsi.deprecation import renamed_keywords, warn_renamed

__all__ = ["SlideInput", "find_slides"]

# Files that sit beside slides and are never slides themselves.
_COMPANIONS = (".truth.json", ".tissue.png", ".tumor.png", ".nuclei.geojson")


@dataclass(frozen=True)
class SlideInput:
    """A slide to process: its id (the file name without extension), unique in a batch, and its path."""

    slide_id: str
    path: Path

    @property
    def id(self) -> str:
        """Deprecated name of `slide_id`."""
        warn_renamed("id", "slide_id", "SlideInput")
        return self.slide_id


SlideInput.__init__ = renamed_keywords(id="slide_id")(SlideInput.__init__)


def find_slides(paths: list[str | Path]) -> tuple[list[SlideInput], list[Path]]:
    """Slides named directly or found in folders (recursively, by extension), and the skipped other files.

    Raises ValueError when a path does not exist or two slides would get the same id.
    """
    found: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() in SLIDE_EXTENSIONS and not child.name.startswith("."):
                    found.append(child)
                elif not child.name.endswith(_COMPANIONS) and not any(
                    part.endswith(".zarr") for part in child.parts
                ):
                    skipped.append(child)
        else:
            found.append(path)
    # DICOM slides are folders of .dcm files: one slide per folder, opened through its first file.
    slides, seen_dicom = [], set()
    for path in found:
        if path.suffix.lower() == ".dcm":
            if path.parent in seen_dicom:
                continue
            seen_dicom.add(path.parent)
            slides.append(SlideInput(path.parent.name, path))
        else:
            slides.append(SlideInput(path.stem, path))
    ids: dict[str, Path] = {}
    for slide in slides:
        if slide.slide_id in ids and ids[slide.slide_id] != slide.path:
            raise ValueError(f"two slides would share the id {slide.slide_id!r}: {ids[slide.slide_id]} and {slide.path}; "
                             "rename one or process them in separate runs")  # fmt: skip
        ids[slide.slide_id] = slide.path
    unique = list({s.path: s for s in slides}.values())
    return unique, skipped
