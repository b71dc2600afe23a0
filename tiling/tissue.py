"""Tissue detection on a low-resolution image: saturation and optical density (Otsu), morphology, holes, area.

Glass is bright and grey; H&E tissue is coloured (saturated) and absorbs light (optical density). Pen marks are
saturated too but blue, green or black, and are removed by hue and darkness. Pale tissue (loose or mucinous
stroma) under the thresholds is kept where it joins tissue over them (a hysteresis threshold). The mask becomes
shapely polygons in level-0 pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import shapely
from PIL import Image
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from skimage import measure, morphology
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

import wsi
from tiling.roi import load_roi  # re-exported: ROI loading lived here first
from wsi import qupath
from wsi.deprecation import renamed_keywords

__all__ = ["TissueParams", "TissueResult", "detect_tissue", "detect_tissue_mask", "drop_fragments", "load_roi",
           "mask_to_geometry", "read_downsampled", "write_tissue_geojson"]  # fmt: skip


@dataclass(frozen=True)
class TissueParams:
    """Options of tissue detection. Areas and radii are in microns.

    A slide without mpp has no microns: then `closing_um`, `min_area_um2` and `max_hole_um2` are not used;
    the closing radius is 1 work pixel, pieces under 1/20,000 of the work image are dropped and holes under
    1/10,000 of it are filled.
    """

    work_mpp: float = 8.0  # resolution of the work image (about 8-16 um/px)
    min_saturation: float = 0.07  # floor under the Otsu threshold on saturation
    min_od: float = 0.12  # floor under the Otsu threshold on optical density
    max_brightness: float = 0.94  # brighter than this (of 255) in every channel is glass
    # Pale tissue (loose or mucinous stroma, thin pale edges): pixels over this fraction of either threshold are
    # tissue where they touch tissue over the full threshold (hysteresis); 1 turns it off.
    pale_fraction: float = 0.7
    closing_um: float = 24.0  # radius of the closing that joins nearby tissue
    min_area_um2: float = 20_000.0  # smaller pieces (dust, debris) are dropped
    max_hole_um2: float = 40_000.0  # smaller holes are filled
    reject_pen: bool = True  # drop blue / green / black ink
    max_work_size: int = 1536  # longest side of the work image: large slides are analysed at a coarser mpp
    exact: bool = False  # work image by read_region (else from DCT-scaled native JPEG tiles where possible)
    # A work image under this many px on its longest side (a small slide) is averaged from a finer decode of
    # the same native tiles, kept as `TissueResult.preview` (0: never; see `_work_image`).
    preview_size: int = 512


@dataclass(frozen=True)
class TissueResult:
    """The tissue geometry (level-0 px), the mask it came from and the mask's level-0 pixels per mask pixel;
    `image` is the RGB work image the mask was computed on (same downsample), e.g. for a thumbnail.

    `preview` is the finer image of the whole slide that a small slide's work image was averaged from (at
    least `TissueParams.preview_size` px on its longest side, unless the slide is smaller), at
    `preview_downsample` level-0 px per pixel (the decode's own: level downsample x DCT scale): a thumbnail
    without reading the slide again. Under 1024 px unless even the 1/8 decode is larger (a single-level slide
    finer than 1 um/px: 1500 px for a 3 mm one at 0.25 um/px). None when the work image was read directly
    (large slides, `exact`, levels that are not JPEG-tiled) or when the level read is too small for a preview
    (a multi-level slide whose coarsest levels are tiny)."""

    geometry: BaseGeometry
    mask: np.ndarray
    downsample: float
    image: np.ndarray | None = None
    preview: np.ndarray | None = None
    preview_downsample: float | None = None


def _pen_mask(rgb: np.ndarray, saturation: np.ndarray, value: np.ndarray, rows: int = 256) -> np.ndarray:
    """Blue, green and black ink. H&E hues are pink to purple (about 0.75..1 and 0..0.05); inks lie between.

    Hue is computed only for saturated pixels, a block of rows at a time (bounded memory)."""
    black = (value < 0.25 * 255) & (saturation < 0.35)
    ink = np.zeros_like(black)
    for r0 in range(0, rgb.shape[0], rows):
        coloured = saturation[r0 : r0 + rows] > 0.25
        if coloured.any():
            hue = rgb2hsv(rgb[r0 : r0 + rows][coloured][None].astype(np.float32) / 255)[0, :, 0]
            ink[r0 : r0 + rows][coloured] = (hue > 0.2) & (hue < 0.7)
    return ink | black


# Optical density of an 8-bit intensity, as a lookup table.
_OD = (-np.log(np.clip(np.arange(256, dtype=np.float32) / 255.0, 1 / 255, 1.0))).astype(np.float32)


def _saturation_od(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Saturation, summed optical density (float32) and the brightest-channel value (uint8) of RGB pixels."""
    top, bottom = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = np.subtract(top, bottom, dtype=np.float32)
    saturation /= np.maximum(top, 1)
    od = _OD[rgb[..., 0]]
    od += _OD[rgb[..., 1]]
    od += _OD[rgb[..., 2]]
    return saturation, od, top


@renamed_keywords(um_per_px="mpp")
def detect_tissue_mask(rgb: np.ndarray, mpp: float | None, params: TissueParams) -> np.ndarray:
    """Boolean tissue mask of an (H, W, 3) RGB work image of `mpp` microns per pixel (None: unknown).

    The old keyword `um_per_px=` is accepted with a DeprecationWarning.
    """
    # Thresholds from a regular subsample of about 250,000 pixels, then the mask a block of rows at a time:
    # memory stays a few bytes per pixel however large the work image.
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 250_000)))
    sample = rgb[::step, ::step]
    saturation, od, _ = _saturation_od(sample)
    candidates = sample.min(axis=-1) <= params.max_brightness * 255  # brighter in every channel is glass
    if candidates.sum() < 16:
        return np.zeros(rgb.shape[:2], bool)
    grey = np.ptp(saturation[candidates]) < 1e-3  # a grey slide (one channel, 16-bit): optical density alone
    if grey and np.ptp(od[candidates]) < 1e-3:
        return np.zeros(rgb.shape[:2], bool)
    sat_t = np.inf if grey else max(params.min_saturation, float(threshold_otsu(saturation)))
    od_t = max(params.min_od, float(threshold_otsu(od)))
    mask = np.zeros(rgb.shape[:2], bool)
    pale = np.zeros(rgb.shape[:2], bool)
    for r0 in range(0, rgb.shape[0], 256):
        block = rgb[r0 : r0 + 256]
        saturation, od, top = _saturation_od(block)
        not_glass = block.min(axis=-1) <= params.max_brightness * 255
        if params.reject_pen and not grey:  # grey has no hue: dark tissue would read as black ink
            not_glass &= ~_pen_mask(block, saturation, top)
        mask[r0 : r0 + 256] = ((saturation > sat_t) | (od > od_t)) & not_glass
        low_sat, low_od = sat_t * params.pale_fraction, od_t * params.pale_fraction
        pale[r0 : r0 + 256] = ((saturation > low_sat) | (od > low_od)) & not_glass
    radius = max(1, round(params.closing_um / mpp)) if mpp else 1
    min_area = max(4, params.min_area_um2 / mpp**2) if mpp else max(4, mask.size // 20_000)
    hole = params.max_hole_um2 / mpp**2 if mpp else mask.size // 10_000
    mask = _closed_and_filled(mask, radius, int(hole))
    if params.pale_fraction < 1:
        # Pale pixels join tissue of some substance (a quarter of the smallest piece kept), not a few stray
        # pixels over the thresholds in a pale smear.
        seeds = _without_small_components(mask, int(min_area / 4))
        mask = _closed_and_filled(_touching(pale | mask, seeds), radius, int(hole))
    return _without_small_components(mask, int(min_area))


def _closed_and_filled(mask: np.ndarray, radius: int, hole: int) -> np.ndarray:
    """`mask` closed with a disk of `radius` px (nearby tissue joined; padded so that tissue touching the image
    border is not eroded) and its holes of at most `hole` px filled."""
    mask = np.pad(mask, radius, mode="edge")
    mask = ndimage.binary_closing(mask, structure=morphology.disk(radius))[radius:-radius, radius:-radius]
    return mask | ~_without_small_components(~mask, hole)


def _touching(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 8-connected components of `mask` that hold at least one pixel of `seeds` (a hysteresis threshold:
    pale tissue is kept where it joins tissue, a pale smear on its own is not)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool), output=np.int32)
    hit = np.bincount(labels[seeds], minlength=n + 1) > 0
    hit[0] = False
    return hit[labels]


def _without_small_components(mask: np.ndarray, max_size: int) -> np.ndarray:
    """`mask` without 8-connected components of at most `max_size` pixels (int32 labels: a third of the
    memory of skimage's remove_small_objects, which matters for large work images)."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool), output=np.int32)
    keep = np.bincount(labels.ravel()) > max_size
    keep[0] = False
    return keep[labels]


def even_odd(rings: list[BaseGeometry]) -> BaseGeometry:
    """The area inside an odd number of `rings` (filled polygons whose boundaries do not cross, as a mask's
    contours): a ring inside an even number of others is a shell, inside an odd number a hole of the ring just
    around it. The same geometry as folding symmetric_difference over the rings, in about n log n instead of
    n^2 (a 100,000 px slide of many tissue pieces has thousands of rings: minutes before, a second now)."""
    if not rings:
        return Polygon()
    # Pairs (i, j): rings[i] contains rings[j] (and every ring itself).
    container, contained = shapely.STRtree(rings).query(rings, predicate="contains")
    keep = container != contained
    container, contained = container[keep], contained[keep]
    depth = np.bincount(contained, minlength=len(rings))
    holes: dict[int, list[BaseGeometry]] = {}
    for c, h in zip(container, contained, strict=True):
        if depth[h] % 2 == 1 and depth[c] == depth[h] - 1:  # a hole of the ring just around it
            holes.setdefault(int(c), []).append(rings[h])
    pieces = [rings[i].difference(shapely.union_all(holes[i])) if i in holes else rings[i]
              for i in np.flatnonzero(depth % 2 == 0)]  # fmt: skip
    return shapely.union_all(pieces)


def mask_to_geometry(mask: np.ndarray, downsample: float, simplify: float = 0.5) -> BaseGeometry:
    """Polygons (level-0 pixels) of a boolean mask whose pixel (i, j) covers level-0 [j*d, (j+1)*d) x [i*d, ...).

    Contours at the 0.5 level; nested rings become holes (even-odd), simplified by `simplify` mask pixels.
    """
    if not mask.any():
        return Polygon()
    padded = np.pad(mask.astype(np.uint8), 1)
    rings = [Polygon(c[:, ::-1] - 1) for c in measure.find_contours(padded, 0.5) if len(c) >= 4]
    rings = [r.buffer(0) if not r.is_valid else r for r in rings]
    geometry = even_odd(rings).simplify(simplify)
    # Contour coordinates are pixel centres of the mask grid.
    geometry = shapely.affinity.affine_transform(geometry, [downsample, 0, 0, downsample, 0.5 * downsample,
                                                            0.5 * downsample])  # fmt: skip
    return qupath.clean_geometry(geometry)


def read_downsampled(slide: wsi.Slide, factor: float, exact: bool = False) -> np.ndarray:
    """The whole slide shrunk by `factor` (level-0 px per output px), `round(w0 / factor)` by
    `round(h0 / factor)` pixels, read from the coarsest level not coarser than that.

    When that level is JPEG-tiled (a TIFF / SVS level tifffile reads) and at least twice finer than asked, its
    native tiles are decoded straight to 1/8, 1/4 or 1/2 of their size by libjpeg-turbo's DCT scaling
    (`tiling.resample`'s decoder) and the mosaic is resized by what remains: several times faster than
    read_region of the whole level and a full-size decode. DCT scaling is close to an area average; a sample
    tile is checked against the slide reader first, and `exact` (or a level that is not JPEG, or a mosaic over
    `NATIVE_MOSAIC_BYTES`) reads with read_region, block by block.
    """
    if not exact:
        image = _read_native_downsampled(slide, factor)
        if image is not None:
            return image
    return _read_downsampled(slide, factor)


# Largest decoded mosaic (bytes) the native path builds; past it, read_region block by block (bounded memory).
NATIVE_MOSAIC_BYTES = 128 * 2**20


def _read_native_downsampled(slide: wsi.Slide, factor: float) -> np.ndarray | None:
    """`read_downsampled` from DCT-scaled native JPEG tiles, or None when the level does not allow it."""
    mosaic = _native_mosaic(slide, factor)
    if mosaic is None:
        return None
    return _resize_mosaic(mosaic, _out_size(slide, factor), Image.Resampling.BILINEAR)


def _out_size(slide: wsi.Slide, factor: float) -> tuple[int, int]:
    """(width, height) of the whole slide shrunk by `factor`: `round(w0 / factor)` by `round(h0 / factor)`."""
    w0, h0 = slide.meta.dimensions
    return max(1, round(w0 / factor)), max(1, round(h0 / factor))


def _resize_mosaic(mosaic: tuple, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """A `_native_mosaic`'s level extent (its `box`: the last tiles run past it) resized exactly onto `size`."""
    tiles, box, _ = mosaic
    return np.asarray(Image.fromarray(tiles).resize(size, resample, box=box))


def _native_mosaic(slide: wsi.Slide, factor: float, preview_size: int = 0):
    """(mosaic, box, level-0 px per mosaic px) of the level `read_downsampled` reads for `factor`, its native
    JPEG tiles decoded at the DCT scale (1/2, 1/4, 1/8) that `factor` allows, and put side by side; `box` is
    the level's extent in mosaic pixels (the last tiles run past it). With `preview_size`, at the coarsest
    scale not coarser than that one whose mosaic has at least `min(preview_size, longest side of the slide)` px
    on the level's longest side (else, when even a full decode of the level is smaller, at that one: no finer
    decode that could not serve as a preview). None where the native path does not apply (see
    `read_downsampled`)."""
    from tiling.reader import NativeTiles
    from tiling.resample import DCT_SCALES, dct_scale

    level = slide.level_for_downsample(factor)
    d = slide.meta.level_downsamples[level]
    if factor / d < 2:
        return None  # no DCT scale applies: nothing to gain over read_region
    try:
        native = NativeTiles.open_level(slide.path, level, slide.meta.level_dimensions[level], d)
    except Exception:  # a tile that does not decode: the slide reader's path says so in its own words
        return None
    if native is None or not native.jpeg:
        return None
    try:
        scale = dct_scale(factor / d, native.size)
        if scale == 1:
            return None
        if preview_size:
            finer = [s for s in (*DCT_SCALES, 1) if s <= scale and native.size % s == 0]
            target = min(preview_size, max(slide.meta.dimensions))
            scale = next((s for s in finer if max(native.width, native.height) / s >= target), scale)
        step = native.size // scale
        across, down = -(-native.width // native.size), -(-native.height // native.size)
        if across * down * step * step * 3 > NATIVE_MOSAIC_BYTES:
            return None
        if not _scaled_tile_agrees(slide, native, scale, across // 2, down // 2):
            return None
        mosaic = np.empty((down * step, across * step, 3), np.uint8)
        for ty in range(down):
            for tx in range(across):
                mosaic[ty * step : (ty + 1) * step, tx * step : (tx + 1) * step] = native.decode_tile(
                    tx, ty, scale
                )
    finally:
        native.close()
    return mosaic, (0.0, 0.0, native.width / scale, native.height / scale), d * scale


def _scaled_tile_agrees(slide: wsi.Slide, native, scale: int, tx: int, ty: int) -> bool:
    """Whether native tile (tx, ty), DCT-scaled, is within `DCT_TOLERANCE` (mean grey levels) of the area average
    of what the slide reader returns there (a wrong level mapping, colour space or scale gives tens)."""
    from tiling.reader import DCT_TOLERANCE
    from tiling.resample import area_resize

    size = min(native.size, native.width - tx * native.size, native.height - ty * native.size)
    d = native.downsample
    region = slide.read_region((round(tx * native.size * d), round(ty * native.size * d)), native.level,
                               (native.size, native.size))  # fmt: skip
    step = native.size // scale
    expected = area_resize(region, (step, step))
    scaled = native.decode_tile(tx, ty, scale)
    keep = size // scale  # whole scaled pixels inside the level
    diff = np.abs(scaled[:keep, :keep].astype(np.int16) - expected[:keep, :keep].astype(np.int16))
    return float(diff.mean()) <= DCT_TOLERANCE


def _read_downsampled(slide: wsi.Slide, factor: float, block: int = 1024) -> np.ndarray:
    """`read_downsampled` with read_region, block by block, so memory follows the output size, not the level's."""
    level = slide.level_for_downsample(factor)
    d = slide.meta.level_downsamples[level]
    out_w, out_h = _out_size(slide, factor)
    out = np.empty((out_h, out_w, 3), np.uint8)
    step = max(1, int(block * d / factor))  # output pixels per block
    for oy in range(0, out_h, step):
        for ox in range(0, out_w, step):
            ow, oh = min(step, out_w - ox), min(step, out_h - oy)
            x0, y0 = round(ox * factor), round(oy * factor)
            lw = max(1, round(ow * factor / d))
            lh = max(1, round(oh * factor / d))
            region = slide.read_region((x0, y0), level, (lw, lh))
            out[oy : oy + oh, ox : ox + ow] = wsi.resize_rgb(region, (ow, oh))
    return out


def _work_image(
    slide: wsi.Slide, params: TissueParams
) -> tuple[np.ndarray, float, float | None, np.ndarray | None, float | None]:
    """(image, level-0 px per image px, the image's mpp or None, the preview it was averaged from or None, the
    preview's level-0 px per pixel or None).

    A work image under `params.preview_size` px on its longest side (a small slide: a biopsy) comes from the
    native tiles decoded at a finer DCT scale (CMU-1-Small-Region: 1/4 instead of 1/8, 742 px instead of 185 px
    high, about 4 ms more), averaged over the work image's pixels (an area average; DCT scaling is one too);
    that finer image is the preview (`TissueResult.preview`) when it has at least `preview_size` px on its
    longest side, or the whole slide's (a slide smaller than that). Where the level read has no such decode
    (a full decode of it is smaller: a multi-level slide whose coarse level is tiny), there is no preview; where
    the native path does not apply, or with `exact`, the work image is read by read_region, and there is none.
    """
    w0, h0 = slide.meta.dimensions
    # Memory stays bounded whatever the slide size: past max_work_size the work image gets coarser.
    factor = max(1.0, max(w0, h0) / params.max_work_size)
    if slide.meta.mpp is not None:
        factor = max(factor, params.work_mpp / slide.meta.mpp)
    size = _out_size(slide, factor)
    small = max(size) < params.preview_size
    mosaic = None if params.exact else _native_mosaic(slide, factor, params.preview_size if small else 0)
    preview = preview_downsample = None
    if mosaic is None:
        image = _read_downsampled(slide, factor)
    elif not small:
        image = _resize_mosaic(mosaic, size, Image.Resampling.BILINEAR)  # as `read_downsampled`
    else:
        image = _resize_mosaic(mosaic, size, Image.Resampling.BOX)
        tiles, box, mosaic_downsample = mosaic
        # The level's extent, whole pixels (a last one straddling the edge keeps its decoded value).
        finer = tiles[: max(1, round(box[3])), : max(1, round(box[2]))]
        if max(finer.shape[:2]) >= min(params.preview_size, max(w0, h0)):
            preview, preview_downsample = np.ascontiguousarray(finer), mosaic_downsample
    downsample = w0 / image.shape[1]
    mpp = slide.meta.mpp * downsample if slide.meta.mpp is not None else None
    return image, downsample, mpp, preview, preview_downsample


def detect_tissue(slide: wsi.Slide, params: TissueParams | None = None, **overrides) -> BaseGeometry:
    """Tissue of `slide` as shapely geometry in level-0 pixels (empty geometry when there is none).

    `overrides` set fields of `TissueParams` (e.g. `min_area_um2=5e4`).
    """
    return detect_tissue_result(slide, params, **overrides).geometry


def detect_tissue_result(slide: wsi.Slide, params: TissueParams | None = None, **overrides) -> TissueResult:
    """`detect_tissue` with the mask and its downsample (for thumbnails and checks)."""
    params = replace(params or TissueParams(), **overrides)
    wsi.require_brightfield(slide.meta, "tissue detection")
    image, downsample, mpp, preview, preview_downsample = _work_image(slide, params)
    mask = detect_tissue_mask(image, mpp, params)
    geometry = mask_to_geometry(mask, downsample)
    if geometry.is_empty:
        warnings.warn(f"{slide.path}: no tissue found", stacklevel=2)
    return TissueResult(geometry, mask, downsample, image, preview, preview_downsample)


def drop_fragments(geometry: BaseGeometry, min_area: float) -> BaseGeometry:
    """`geometry` without the polygons (connected pieces) whose area is under `min_area` (same units squared).

    Holes count against a piece's area: a thin ring of tissue around a large hole is a small fragment. Slivers
    like these come from the simplified outline and from cutting the tissue with a ROI; they hold no tile and
    clutter QuPath as "Tissue" annotations."""
    geometry = qupath.clean_geometry(geometry)
    if geometry.is_empty or min_area <= 0:
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if not p.is_empty and p.area >= min_area]
    if not parts:
        return Polygon()
    return MultiPolygon(parts) if len(parts) > 1 else parts[0]


def write_tissue_geojson(path: str | Path, geometry: BaseGeometry, mpp: float | None = None) -> Path:
    """Tissue as QuPath annotations (one per connected piece), classified "Tissue", with area in um^2 or px."""
    objects = []
    for part in shapely.get_parts(geometry):
        if part.is_empty:
            continue
        measurements = {"Area um^2": part.area * mpp**2} if mpp else {"Area px^2": part.area}
        objects.append(qupath.QuPathObject(part, "annotation", "Tissue", measurements=measurements))
    return qupath.write_geojson(path, objects)
