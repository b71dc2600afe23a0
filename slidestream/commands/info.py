"""`slidestream info SLIDE...`: dimensions, levels, mpp, objective power, vendor and backend."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import wsi
from slidestream.commands._common import add_deprecated_alias, slide_mpp


def register(sub) -> None:
    p = sub.add_parser("info", help="describe slides (size, levels, tiles, mpp, vendor, backend)",
                       description="Print what each slide holds: per level its size, downsample, mpp, and the "
                       "file's tile size and compression (a grid of that tile size at that level's mpp copies "
                       "JPEG tiles as they are). Folders are searched for slide files. Unreadable files are "
                       "reported, not fatal.")  # fmt: skip
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files, or folders to search for them")
    p.add_argument("--backend", choices=wsi.backends.list_backends(), help="force a reader (default: auto)")
    p.add_argument(
        "--slide-mpp", type=slide_mpp, help="the slides' own um/px, for files whose metadata lacks it"
    )
    add_deprecated_alias(p, "--mpp", "--slide-mpp", dest="slide_mpp", type=slide_mpp)
    p.add_argument("--json", action="store_true", help="one JSON object per slide, one per line")
    p.set_defaults(func=run)


def level_storage(path: str | Path, meta: wsi.SlideMeta) -> list[tuple[list[int] | None, str | None]]:
    """([tile width, height], compression) of each level as the file stores it, from the TIFF page of the
    level's dimensions (compression as tifffile names it: "JPEG", "LZW", ...; tile None for a striped page);
    for other formats openslide's tile size and no compression; None where unknown."""
    import tifffile

    pages: dict[tuple[int, int], tuple[list[int] | None, str | None]] = {}
    try:
        with tifffile.TiffFile(path) as tif:
            for series in tif.series:
                for level in series.levels:
                    page = level.pages[0]
                    tile = [page.tilewidth, page.tilelength] if page.is_tiled else None
                    pages.setdefault((page.imagewidth, page.imagelength), (tile, page.compression.name))
    except Exception:  # not a TIFF, or one tifffile cannot parse: what openslide says, if anything
        pass
    out = []
    for level, size in enumerate(meta.level_dimensions):
        w = meta.properties.get(f"openslide.level[{level}].tile-width")
        h = meta.properties.get(f"openslide.level[{level}].tile-height")
        out.append(pages.get(tuple(size), ([int(w), int(h)] if w and h else None, None)))
    return out


def _table(meta: wsi.SlideMeta, slide_mpp: float | None = None, unused_mpp: float | None = None) -> str:
    """The slide as a table; `slide_mpp` is the --slide-mpp that stood in for the file's missing one, and
    `unused_mpp` one given for a file with its own (not used, as tiling does not use it), each said so."""
    if meta.mpp is None:
        mpp = "missing (pass --slide-mpp)"
    elif slide_mpp:
        mpp = f"{meta.mpp} (--slide-mpp)"
    elif unused_mpp:
        mpp = f"{meta.mpp} (the file's; --slide-mpp {unused_mpp:g} is for files without one)"
    else:
        mpp = f"{meta.mpp}"
    lines = [
        f"{meta.path}",
        f"  backend      {meta.backend}  (vendor: {meta.vendor or 'unknown'})",
        f"  dimensions   {meta.dimensions[0]} x {meta.dimensions[1]} px",
        f"  mpp          {mpp}",
        f"  objective    {meta.objective_power if meta.objective_power else 'unknown'}",
        f"  channels     {meta.channels} ({meta.modality}{': ' + ', '.join(meta.channel_names) if meta.channel_names else ''})",
        *([f"  intensity    {meta.intensity}"] if meta.intensity else []),
        "  levels       level  width x height  downsample    mpp  tile size    compression",
    ]
    storage = level_storage(meta.path, meta)
    for level, ((w, h), d) in enumerate(zip(meta.level_dimensions, meta.level_downsamples, strict=True)):
        mpp = meta.level_mpp(level)
        tile, compression = storage[level]
        tiles = f"{tile[0]} x {tile[1]}" if tile else "-"
        lines.append(f"               {level:>5}  {w:>6} x {h:<6}  {d:>10.3f}  {f'{mpp:.3f}' if mpp else '-':>5}  "
                     f"{tiles:<11}  {compression or '-'}")  # fmt: skip
    return "\n".join(lines)


def _paths(given: str, report) -> list[str]:
    """A file as it is (opening it says what is wrong); a folder searched for slides like `tile` and `run` do."""
    from slidestream.discovery import find_slides

    if wsi.file_kind(given) != "directory":
        return [given]
    try:
        slides, skipped = find_slides([given])
    except ValueError as exc:  # NoSlidesFound names the extensions searched
        report(given, exc)
        return []
    for item in skipped:
        print(f"skipped: {item.path}: {item.reason}", file=sys.stderr)
    return [str(s.path) for s in slides]


def run(args) -> int:
    failed = 0

    def report(path, exc) -> None:
        nonlocal failed
        failed += 1
        if args.json:
            print(json.dumps({"path": str(path), "error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)

    for given in args.slides:
        for path in _paths(given, report):
            try:
                with wsi.open_slide(path, backend=args.backend) as slide:
                    meta = slide.meta
                # As tiling uses it (`tiling.engine.open_for_tiling`): only where the file records none. The
                # value was checked as a scan resolution when the argument was parsed.
                given = args.slide_mpp if meta.mpp is None else None
                if given is not None:
                    meta = dataclasses.replace(meta, mpp=given)
            except (wsi.SlideError, ValueError) as exc:
                report(path, exc)
                continue
            if args.json:
                storage = level_storage(meta.path, meta)
                print(json.dumps({**meta.to_dict(), "level_tile_size": [t for t, _ in storage],
                                  "level_compression": [c for _, c in storage]}))  # fmt: skip
            else:
                print(_table(meta, given, args.slide_mpp if given is None else None))
    return 1 if failed else 0
