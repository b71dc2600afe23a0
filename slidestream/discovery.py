"""Finding slides in the paths a user gives, naming them, and saying why every other file was left out."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from wsi import SLIDE_EXTENSIONS, file_kind
from wsi.deprecation import renamed_keywords, warn_renamed

__all__ = ["NoSlidesFound", "SkippedInput", "SlideInput", "find_slides", "slide_id_for"]

# Files that sit beside slides and are never slides themselves.
_COMPANIONS = (".truth.json", ".tissue.png", ".tumor.png", ".nuclei.geojson")


def _check_slide_id(slide_id: str) -> None:
    """An id is one folder name under OUT/slides/: never empty, `.` or `..`, never a path."""
    if slide_id in ("", ".", "..") or any(c in slide_id for c in ("/", "\\", "\0")):
        raise ValueError(
            f"slide id {slide_id!r} is not a usable folder name under OUT/slides/ (it must be a single, "
            "non-empty name other than '.' and '..')"
        )


@dataclass(frozen=True)
class SlideInput:
    """A slide to process: its id (the file name without extension; a DICOM slide's folder name), unique in a
    batch and always a single folder name under OUT/slides/ (checked), and the path opened to read it."""

    slide_id: str
    path: Path

    def __post_init__(self) -> None:
        _check_slide_id(self.slide_id)

    @property
    def id(self) -> str:
        """Deprecated name of `slide_id`."""
        warn_renamed("id", "slide_id", "SlideInput")
        return self.slide_id


SlideInput.__init__ = renamed_keywords(id="slide_id")(SlideInput.__init__)


@dataclass(frozen=True)
class SkippedInput:
    """A file found in a searched folder that is not processed, and why (shown to the user, kept in the manifest)."""

    path: Path
    reason: str


class NoSlidesFound(ValueError):
    """Nothing to process in the given paths; the message names them and the extensions searched."""

    def __init__(self, paths: list[Path], skipped: list[SkippedInput]):
        self.paths = paths
        self.skipped = skipped
        message = (f"no slides found in {', '.join(str(p) for p in paths)} "
                   f"(extensions searched: {' '.join(SLIDE_EXTENSIONS)})")  # fmt: skip
        if skipped:
            shown = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:5])
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            message += f"; {len(skipped)} file(s) skipped: {shown}{more}"
        super().__init__(message)


def slide_id_for(path: str | Path) -> str:
    """The id of a slide file: its name without extension and leading dots (`...svs` -> `___svs`, never `..`)."""
    path = Path(path)
    stem = path.stem.lstrip(".").strip().replace("\\", "_")  # a backslash is a separator on Windows shares
    return stem if stem else path.name.replace(".", "_")


def _is_slide_name(name: str) -> bool:
    return name.lower().endswith(SLIDE_EXTENSIONS)


def _skip_reason(path: Path, kind: str) -> str:
    if kind == "dangling symbolic link":
        return f"dangling symbolic link to {os.readlink(path)}"
    if kind == "file":
        return f"not a slide file ({path.suffix or 'no extension'})"
    return f"a {kind}, not a slide file"


def _readable_folder(folder: Path) -> bool:
    return os.access(folder, os.R_OK | os.X_OK)


def _scan(folder: Path, found: list[Path], skipped: list[SkippedInput]) -> None:
    """Slide files under `folder` (recursively) into `found`; everything else into `skipped` with its reason.

    Files named like slides are taken whatever they are (a FIFO, a dangling link): opening them then fails with
    the real reason, recorded for that slide. Hidden files (`._x.svs` beside macOS copies) are skipped, listed.
    """
    for child in sorted(folder.rglob("*")):
        if child.name.endswith(_COMPANIONS) or any(part.endswith(".zarr") for part in child.parts):
            continue  # our outputs, and files that belong to a slide
        kind = file_kind(child)
        if kind == "directory":
            if not _readable_folder(child):  # rglob passes over it without a word
                skipped.append(
                    SkippedInput(child, "a folder this user cannot read (permission denied): not searched")
                )
            elif _is_slide_name(child.name) and not any(child.iterdir()):
                skipped.append(SkippedInput(child, "an empty folder named like a slide file"))
            continue
        if not _is_slide_name(child.name):
            skipped.append(SkippedInput(child, _skip_reason(child, kind)))
        elif child.name.startswith("."):
            skipped.append(SkippedInput(child, "hidden file (its name starts with '.'); name it on the command "
                                               "line to process it"))  # fmt: skip
        else:
            found.append(child)


def _dicom_slides(dicom: list[tuple[Path, bool]], others: list[Path]) -> list[SlideInput]:
    """A DICOM whole-slide image is a folder of .dcm instances: one slide named after the folder, opened through
    its first instance. A .dcm named on the command line, or one beside other slides or alone, is a slide of its
    own named after its file (opening tells whether it is a whole-slide image)."""
    beside_others = {Path(os.path.abspath(p.parent)) for p in others}
    groups: dict[Path, list[Path]] = defaultdict(list)
    slides = []
    for path, named in dicom:
        folder = Path(os.path.abspath(path.parent))
        if named or folder in beside_others or not folder.name:
            slides.append(SlideInput(slide_id_for(path), path))
        else:
            groups[folder].append(path)
    for folder, paths in groups.items():
        if len(paths) == 1:
            slides.append(SlideInput(slide_id_for(paths[0]), paths[0]))
        else:
            slides.append(SlideInput(slide_id_for(folder.name + ".dcm"), sorted(paths)[0]))
    return slides


def find_slides(paths: list[str | Path]) -> tuple[list[SlideInput], list[SkippedInput]]:
    """Slides named directly or found in folders (recursively, by extension), and the other files with why.

    Raises ValueError when a path does not exist or two slides would get the same id, and `NoSlidesFound` (a
    ValueError naming the paths and the extensions searched) when there is nothing to process.
    """
    found: list[tuple[Path, bool]] = []  # (path, named on the command line)
    skipped: list[SkippedInput] = []
    for raw in paths:
        path = Path(raw)
        kind = file_kind(path)
        if kind == "missing":
            raise ValueError(f"{path}: no such file or folder")
        if kind == "directory":
            if not _readable_folder(path):
                raise ValueError(f"{path}: permission denied: this user cannot read the folder")
            inside: list[Path] = []
            _scan(path, inside, skipped)
            found.extend((p, False) for p in inside)
        else:
            found.append((path, True))  # whatever it is: opening it says what is wrong
    dicom = [(p, named) for p, named in found if p.suffix.lower() == ".dcm"]
    others = [p for p, _ in found if p.suffix.lower() != ".dcm"]
    slides = [SlideInput(slide_id_for(p), p) for p in others] + _dicom_slides(dicom, others)
    ids: dict[str, Path] = {}
    for slide in slides:
        if slide.slide_id in ids and ids[slide.slide_id] != slide.path:
            raise ValueError(f"two slides would share the id {slide.slide_id!r}: {ids[slide.slide_id]} and {slide.path}; "
                             "rename one or process them in separate runs")  # fmt: skip
        ids[slide.slide_id] = slide.path
    unique = list({s.path: s for s in slides}.values())
    if not unique:
        raise NoSlidesFound([Path(p) for p in paths], skipped)
    return unique, skipped
