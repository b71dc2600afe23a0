"""Pictures of a tiled slide for reviewers: a figure-ready thumbnail, a tissue mask and a stitch of the tiles.

Each picture is drawn from a low-resolution image of the whole slide that the caller has already read (the
slide's thumbnail, or the work image of tissue detection) and its downsample (level-0 pixels per image pixel),
so that nothing here reads the slide again. Geometry and tile coordinates are level-0 pixels (QuPath's).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import shapely
from PIL import Image, ImageDraw, ImageFont
from shapely.geometry.base import BaseGeometry

__all__ = ["Overlay", "Thumbnail", "draw_thumbnail", "stitch_image", "tissue_mask_image"]

# RGBA. H&E is pink to purple: green is its complement, so tiles read at a glance on any stain.
TILE_FILL = (0, 210, 90, 70)
TILE_EDGE = (0, 150, 60, 220)
TISSUE_OUTLINE = (0, 0, 0, 255)  # dark on pale glass, where the outline runs
ROI_OUTLINE = (0, 90, 255, 255)
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
STITCH_BACKGROUND = (0, 0, 0)  # as CLAM's stitches: pale tiles stand out against it

_MM_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)


@dataclass(frozen=True)
class Overlay:
    """What a thumbnail shows over the slide: tiles (`coords` (N, 2) level-0 top-left, `extent` level-0 side),
    the `tissue` outline with its holes, the `roi`, a scale bar (needs `slide_mpp`, level-0 um/px), a `title`
    and a `subtitle` line under it."""

    coords: np.ndarray | None = None
    extent: float = 0.0
    tissue: BaseGeometry | None = None
    roi: BaseGeometry | None = None
    slide_mpp: float | None = None
    title: str = ""
    subtitle: str = ""


@dataclass(frozen=True)
class Thumbnail:
    """A drawn figure: `image` (H, W, 3) uint8; the slide occupies `box` (x0, y0, x1, y1) of it, at `scale`
    figure pixels per level-0 pixel (the bands above and below hold the title and the legend)."""

    image: np.ndarray
    box: tuple[int, int, int, int]
    scale: float


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
    return image


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(
        size=size
    )  # parsed once per size and process (a slide's figure needs three)


def _rings(geometry: BaseGeometry | None):
    """(exterior, [interiors]) coordinate arrays of each polygon of `geometry`."""
    if geometry is None or geometry.is_empty:
        return
    for part in shapely.get_parts(geometry):
        if part.geom_type == "Polygon" and not part.is_empty:
            yield np.asarray(part.exterior.coords), [np.asarray(r.coords) for r in part.interiors]


def _scale_bar_mm(width_um: float) -> float:
    """A round length in mm close to a fifth of `width_um`."""
    target = width_um / 5 / 1000
    return min(_MM_STEPS, key=lambda mm: abs(math.log(mm / target)))


def draw_thumbnail(image: np.ndarray, downsample: float, overlay: Overlay, min_size: int = 800) -> Thumbnail:
    """The slide `image` (covering the whole slide at `downsample` level-0 px per pixel) with `overlay` drawn on
    it: tiles as a translucent green fill, the tissue outline and its holes in black, the ROI in blue, a scale
    bar in mm, the title above and a legend below.

    A small image (the work image of tissue detection, say) is enlarged to `min_size` px on its longer side
    first, so that lines and text stay legible in a figure.
    """
    image = _check_image(image)
    if downsample <= 0:
        raise ValueError(f"downsample must be positive (level-0 px per image px), got {downsample!r}")
    h, w = image.shape[:2]
    zoom = max(1.0, min_size / max(h, w))
    slide = Image.fromarray(image)
    if zoom > 1:
        slide = slide.resize((round(w * zoom), round(h * zoom)), Image.Resampling.LANCZOS)
    scale = slide.width / (w * downsample)  # figure px per level-0 px
    unit = max(1, round(max(slide.size) / 800))  # line width and text size grow with the figure
    n_tiles = 0
    if overlay.coords is not None and len(overlay.coords):
        coords = np.asarray(overlay.coords, dtype=float)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"coords must be (N, 2) level-0 (x, y), got shape {coords.shape}")
        n_tiles = len(coords)
        _draw_tiles(slide, coords * scale, overlay.extent * scale)
    draw = ImageDraw.Draw(slide)
    for geometry, colour, width in ((overlay.tissue, TISSUE_OUTLINE, 2 * unit),
                                    (overlay.roi, ROI_OUTLINE, 3 * unit)):  # fmt: skip
        for exterior, interiors in _rings(geometry):
            for ring in [exterior, *interiors]:
                draw.line([tuple(p) for p in ring * scale], fill=colour, width=width, joint="curve")
    if overlay.slide_mpp:
        _draw_scale_bar(draw, slide.size, overlay.slide_mpp / scale, unit)
    return _with_bands(slide, overlay, n_tiles, unit, scale)


def _draw_tiles(slide: Image.Image, corners: np.ndarray, side: float) -> None:
    """Tiles (top-left `corners` and `side` in figure px) laid over the RGB `slide` in place: TILE_FILL inside,
    TILE_EDGE on the edges, each at its alpha; where tiles overlap, once (the last one drawn). Drawn as their
    colours and an alpha mask, pasted through the mask: what compositing an RGBA layer gives, without
    converting the figure to RGBA and back (a third of a small slide's drawing time)."""
    colour = Image.new("RGB", slide.size, TILE_FILL[:3])
    alpha = Image.new("L", slide.size, 0)
    paint, mask = ImageDraw.Draw(colour), ImageDraw.Draw(alpha)
    edge = side >= 4  # below 4 px the edges would hide the fill
    for x, y in corners:
        box = [x, y, x + side - 1, y + side - 1]
        if edge:
            paint.rectangle(box, fill=TILE_FILL[:3], outline=TILE_EDGE[:3])
        mask.rectangle(box, fill=TILE_FILL[3], outline=TILE_EDGE[3] if edge else None)
    slide.paste(colour, mask=alpha)


def _draw_scale_bar(draw: ImageDraw.ImageDraw, size: tuple[int, int], um_per_px: float, unit: int) -> None:
    """A bar of a round length in mm at the bottom left, on a white plate."""
    w, h = size
    mm = _scale_bar_mm(w * um_per_px)
    length = mm * 1000 / um_per_px
    label = f"{mm:g} mm"
    font = _font(14 * unit)
    tw = draw.textlength(label, font=font)
    pad, bar = 6 * unit, 4 * unit
    x0, y1 = pad, h - pad
    plate = [x0 - pad // 2, y1 - bar - 18 * unit - pad, x0 + max(length, tw) + pad // 2, y1 + pad // 2]
    draw.rectangle(plate, fill=(255, 255, 255, 255))
    draw.rectangle([x0, y1 - bar, x0 + length, y1], fill=TEXT)
    draw.text((x0 + length / 2, y1 - bar - 2 * unit), label, fill=TEXT, font=font, anchor="md")


def _with_bands(slide: Image.Image, overlay: Overlay, n_tiles: int, unit: int, scale: float) -> Thumbnail:
    """The slide between a title band and a legend band (entries for what the overlay has)."""
    title_font, text_font = _font(18 * unit), _font(13 * unit)
    pad = 8 * unit
    lines = [(overlay.title, title_font), (overlay.subtitle, text_font)]
    lines = [(t, f) for t, f in lines if t]
    title_h = sum(round(f.size * 1.35) for _, f in lines) + (pad if lines else 0)
    swatch = 14 * unit
    entries = [] if overlay.coords is None else [("tiles" if n_tiles else "no tiles", "tile")]
    if overlay.tissue is not None:
        entries.append(
            ("tissue outline and holes" if not overlay.tissue.is_empty else "no tissue found", "tissue")
        )
    if overlay.roi is not None:
        entries.append(("region of interest (ROI)", "roi"))
    if not overlay.slide_mpp:
        entries.append(("no scale bar: the slide has no mpp", None))
    # Legend entries flow left to right and wrap at the figure's width.
    width = max(slide.width, 320 * unit)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows, row, x = [], [], pad
    for label, kind in entries:
        w = (swatch + 4 * unit if kind else 0) + measure.textlength(label, font=text_font) + 3 * pad
        if row and x + w > width:
            rows.append(row)
            row, x = [], pad
        row.append((x, label, kind))
        x += w
    rows = [r for r in [*rows, row] if r]
    legend_h = len(rows) * (swatch + pad) + (pad if rows else 0)
    figure = Image.new("RGB", (width, title_h + slide.height + legend_h), BACKGROUND)
    left = (width - slide.width) // 2
    figure.paste(slide, (left, title_h))
    draw = ImageDraw.Draw(figure, "RGBA")
    y = pad // 2
    for text, font in lines:
        draw.text((pad, y), text, fill=TEXT, font=font)
        y += round(font.size * 1.35)
    y = title_h + slide.height + pad
    for row in rows:
        for x, label, kind in row:
            box = [x, y, x + swatch, y + swatch]
            if kind == "tile":
                draw.rectangle(box, fill=(255, 255, 255))
                draw.rectangle(box, fill=TILE_FILL, outline=TILE_EDGE)
            elif kind == "tissue":
                draw.line(
                    [(x, y + swatch / 2), (x + swatch, y + swatch / 2)], fill=TISSUE_OUTLINE, width=2 * unit
                )
            elif kind == "roi":
                draw.line(
                    [(x, y + swatch / 2), (x + swatch, y + swatch / 2)], fill=ROI_OUTLINE, width=3 * unit
                )
            tx = x + (swatch + 4 * unit if kind else 0)
            draw.text((tx, y + swatch / 2), label, fill=TEXT, font=text_font, anchor="lm")
        y += swatch + pad
    box = (left, title_h, left + slide.width, title_h + slide.height)
    return Thumbnail(np.asarray(figure), box, scale)


def tissue_mask_image(shape: tuple[int, int], downsample: float, region: BaseGeometry | None) -> np.ndarray:
    """(H, W) uint8 mask of `region` (level-0 geometry; holes are background) on the grid of an image of
    `shape` whose pixels are `downsample` level-0 px: 255 inside, 0 outside."""
    h, w = shape
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for exterior, interiors in _rings(region):
        draw.polygon([tuple(p) for p in exterior / downsample], fill=255)
        for ring in interiors:
            draw.polygon([tuple(p) for p in ring / downsample], fill=0)
    return np.asarray(mask)


def stitch_image(shape: tuple[int, int], downsample: float, coords: np.ndarray, extent: float,
                 patches=None, fallback: np.ndarray | None = None, rows: int = 256) -> np.ndarray:  # fmt: skip
    """(H, W, 3) uint8: the tiles pasted at their place on a black canvas of `shape` whose pixels are
    `downsample` level-0 px (CLAM's "stitch"), each shrunk to its box.

    `patches` ((N, S, S, 3), e.g. a store's zarr array) is read `rows` tiles at a time; without it (a
    coords-only store) each box is cut from `fallback`, an image of the whole slide on the same grid.
    """
    h, w = shape
    coords = np.asarray(coords, dtype=float).reshape(-1, 2)
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = STITCH_BACKGROUND
    x0s = np.round(coords[:, 0] / downsample).astype(int)
    y0s = np.round(coords[:, 1] / downsample).astype(int)
    x1s = np.maximum(x0s + 1, np.round((coords[:, 0] + extent) / downsample).astype(int))
    y1s = np.maximum(y0s + 1, np.round((coords[:, 1] + extent) / downsample).astype(int))
    if patches is None and fallback is not None:
        fallback = _check_image(fallback)
        if fallback.shape[:2] != (h, w):
            raise ValueError(f"fallback must have the canvas's shape {(h, w)}, got {fallback.shape[:2]}")
    for start in range(0, len(coords), rows):
        block = patches[start : start + rows] if patches is not None else None
        for i in range(start, min(len(coords), start + rows)):
            x0, y0, x1, y1 = x0s[i], y0s[i], min(x1s[i], w), min(y1s[i], h)
            if x1 <= x0 or y1 <= y0:
                continue
            if block is not None:
                tile = Image.fromarray(np.asarray(block[i - start]))
                full = (x1s[i] - x0, y1s[i] - y0)  # the whole box, cut at the border below
                small = np.asarray(tile.resize(full, Image.Resampling.BOX))
                canvas[y0:y1, x0:x1] = small[: y1 - y0, : x1 - x0]
            elif fallback is not None:
                canvas[y0:y1, x0:x1] = fallback[y0:y1, x0:x1]
    return canvas
