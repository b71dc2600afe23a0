"""Nuclei over whole slides: quality against single tiles, speed against the model-only forward, peak memory.

    python -m benchmarks.nuclei slide-quality [--slide S.svs] [--box 1024] [--classical]
    python -m benchmarks.nuclei slide-speed [--slide S.svs] [--box 1024] [--threads 2]
    python -m benchmarks.nuclei slide-memory --slide S.svs [--classical] [--virtual 100000] [--max-shards 4]

slide-quality: a held-out synthetic slide with tumor (written if missing: 4096 px at 0.25 um/px, seed 2024,
never used for training), a --box px square (at 0.5 um/px) of tissue with tumor cut into 256 px tiles. Each
tile is segmented alone (`nuclei.segment` on the tile) and the slide once (`nuclei.segment_slide` over the box);
both go through the same polygon conversion and are scored per tile against the true nuclei
(`wsi.synthetic.nuclei_in_box`), pooled over the tiles. Printed: F1 and PQ of both, their difference (limit
0.02: stitching loses nothing), and duplicates (pairs of slide nuclei overlapping at IoU > 0.5; limit 0).

slide-speed: the same box, same run: `segment_slide` end to end (reading, forward, post-processing in a worker
process, ownership) against the model-only forward on the same input tiles already in memory; ratio
end-to-end / forward MPix/s (limit 0.7), and the classical baseline's MPix/s. MPix are core pixels at 0.5 um/px.

slide-memory: `write_slide_nuclei` over the whole slide's tissue; peak resident memory of this process. With
--virtual N, the slide is an N x N px slide repeating --slide's pixels (held in memory, so no N x N file has to
be written); with --max-shards K only the first K shards of its plan are segmented (`iter_slide_nuclei`):
tissue detection and the plan cover the whole slide, the segmentation a bounded part of it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import shapely
import torch

import nuclei
import wsi
from nuclei.measure import Placement, measure_instances
from nuclei.slide import SlideNucleiConfig, plan_slide

HELD_OUT = Path("benchmarks/data/nuclei-held-out-4096-seed2024.svs")
TILE = 256  # px at 0.5 um/px


def _held_out() -> Path:
    from wsi.synthetic import SyntheticSpec, write_slide

    if not HELD_OUT.exists():
        HELD_OUT.parent.mkdir(parents=True, exist_ok=True)
        write_slide(HELD_OUT, SyntheticSpec(4096, 4096, mpp=0.25, seed=2024, tumor=True), progress=False)
    return HELD_OUT


def _tumor_box(spec, side0: int) -> tuple[int, int]:
    """Top-left (level-0, on the 512 px grid) of the side0 square with the most tumor and tissue."""
    from wsi.synthetic import field_at

    best, where = -1.0, (0, 0)
    for y in range(0, spec.height - side0 + 1, 512):
        for x in range(0, spec.width - side0 + 1, 512):
            gx, gy = np.meshgrid(np.linspace(x, x + side0, 16), np.linspace(y, y + side0, 16))
            tissue, tumor = field_at(spec, gx, gy)
            score = tissue.mean() + tumor.mean()
            if tissue.mean() > 0.9 and score > best:
                best, where = score, (x, y)
    return where


def _raster(polygons, x0: float, y0: float, scale: float) -> np.ndarray:
    from nuclei.datasets import rasterize_polygons

    rings = [(np.asarray(p.exterior.coords) - (x0, y0)) / scale for p in polygons]
    return rasterize_polygons(rings, (TILE, TILE))


def quality(args) -> None:
    from wsi.synthetic import load_truth, nuclei_in_box

    path = Path(args.slide) if args.slide else _held_out()
    spec = load_truth(path).spec
    model = "classical" if args.classical else (nuclei.load_model(args.model) if args.model else None)
    with wsi.open_slide(path) as slide:
        scale = 0.5 / slide.mpp
        side0 = int(args.box * scale)
        x0, y0 = _tumor_box(spec, side0)
        box = shapely.box(x0, y0, x0 + side0, y0 + side0)
        start = time.perf_counter()
        table = nuclei.segment_slide(slide, model=model, roi=box, tissue=False, mpp=0.5, device=args.device,
                                     config=SlideNucleiConfig(workers=1))  # fmt: skip
        t_slide = time.perf_counter() - start
        found = shapely.from_wkb(table["geometry"].to_numpy())
        tree = shapely.STRtree(found)
        truth = nuclei_in_box(spec, (x0, y0, x0 + side0, y0 + side0), margin=30)
        outlines = [shapely.Polygon(p) for p in truth.polygons(48)]
        tile0 = TILE * scale
        tile_scores, slide_scores = [], []
        for ty in np.arange(y0, y0 + side0, tile0):
            for tx in np.arange(x0, x0 + side0, tile0):
                frame = shapely.box(tx, ty, tx + tile0, ty + tile0)
                true = _raster([o for o in outlines if o.intersects(frame)], tx, ty, scale)
                near = found[tree.query(frame)]
                slide_scores.append(nuclei.metrics.score(true, _raster(near, tx, ty, scale)))
                image = slide.read((int(tx), int(ty)), (int(tile0), int(tile0)), mpp=0.5)
                if model == "classical":
                    labels = nuclei.segment_classical(image, mpp=0.5)
                else:
                    labels = nuclei.segment(image, mpp=0.5, model=model, device=args.device)
                cols = measure_instances(labels, image, Placement(tx, ty, scale, 0.5))
                tile_scores.append(nuclei.metrics.score(true, _raster(shapely.from_wkb(cols["geometry"]), tx, ty,
                                                                        scale)))  # fmt: skip
    pairs = tree.query(found, predicate="intersects")
    pairs = pairs[:, pairs[0] < pairs[1]]
    inter = shapely.area(shapely.intersection(found[pairs[0]], found[pairs[1]]))
    union = shapely.area(found[pairs[0]]) + shapely.area(found[pairs[1]]) - inter
    duplicates = int(np.sum(inter / np.maximum(union, 1e-9) > 0.5))
    s, t = nuclei.metrics.aggregate(slide_scores), nuclei.metrics.aggregate(tile_scores)
    print(f"{path} box {args.box} px at 0.5 um/px at level-0 ({x0}, {y0}); {len(slide_scores)} tiles of {TILE} px; "
          f"{'classical' if model == 'classical' else 'CNN'}; slide run {t_slide:.1f} s, {len(table)} nuclei")  # fmt: skip
    print(f"single tiles: F1 {t.f1:.4f}  PQ {t.pq:.4f}  AJI {t.aji:.4f}")
    print(f"slide:        F1 {s.f1:.4f}  PQ {s.pq:.4f}  AJI {s.aji:.4f}")
    print(f"slide - tiles: F1 {s.f1 - t.f1:+.4f}  PQ {s.pq - t.pq:+.4f} (limit: not below -0.02)")
    print(f"duplicate nuclei (IoU > 0.5 between two slide nuclei): {duplicates} (limit 0)")


def speed(args) -> None:
    from nuclei.segmenters import CnnSegmenter
    from nuclei.slide import _read_tile

    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.slide) if args.slide else _held_out()
    model = nuclei.load_model(args.model) if args.model else nuclei.default_model("cpu")
    config = SlideNucleiConfig(batch_size=args.batch_size, workers=1)
    with wsi.open_slide(path) as slide:
        side0 = int(args.box * 0.5 / slide.mpp)
        box = shapely.box(0, 0, side0, side0)
        plan = plan_slide(slide, 0.5, config, roi=shapely.box(*box.bounds), tissue=False)
        mpix = len(plan) * config.tile**2 / 1e6
        size = config.tile + 2 * config.halo
        images = np.stack([_read_tile(slide, plan.read_box(i), size, 0.5) for i in range(len(plan))])
        segmenter = CnnSegmenter(model, device=args.device)
        segmenter.maps(images[: config.batch_size])  # warm-up

        def forward():
            for i in range(0, len(images), config.batch_size):
                segmenter.maps(images[i : i + config.batch_size])

        runs = []
        for _ in range(args.repeat):  # interleaved, so a change in the machine's load hits both alike
            start = time.perf_counter()
            forward()
            t_fwd = time.perf_counter() - start
            start = time.perf_counter()
            table = nuclei.segment_slide(slide, model=model, roi=box, tissue=False, device=args.device,
                                         config=config)  # fmt: skip
            runs.append((t_fwd, time.perf_counter() - start))
        start = time.perf_counter()
        classical = nuclei.segment_slide(slide, model="classical", roi=box, tissue=False, config=config)
        t_cls = time.perf_counter() - start
    t_fwd = min(r[0] for r in runs)
    t_e2e = min(r[1] for r in runs)
    print(f"{path}: {len(plan)} tiles of {config.tile} px (+ {config.halo} px halo) at 0.5 um/px = {mpix:.2f} MPix; "
          f"device {segmenter.device}, torch threads {torch.get_num_threads()}, batch {config.batch_size}, "
          f"best of {args.repeat}")  # fmt: skip
    print(f"model-only forward on the tiles in memory: {mpix / t_fwd:.3f} MPix/s ({t_fwd:.1f} s)")
    print(
        f"segment_slide end to end (CNN):           {mpix / t_e2e:.3f} MPix/s ({t_e2e:.1f} s, {len(table)} nuclei)"
    )
    print(
        f"segment_slide end to end (classical):     {mpix / t_cls:.3f} MPix/s ({t_cls:.1f} s, {len(classical)} nuclei)"
    )
    print(f"ratio end-to-end / forward: {t_fwd / t_e2e:.2f} (target >= 0.7)")


class PeriodicReader:
    """A `wsi.Slide` reader of an n x n px slide that repeats every level of a source slide (held in memory)."""

    name = "periodic"
    vendor = "synthetic"
    objective_power = None
    properties: dict = {}

    def __init__(self, source: wsi.Slide, n: int):
        self.raw_mpp = source.mpp
        self.level_downsamples = source.meta.level_downsamples
        self.levels = [source.read_region((0, 0), i, d) for i, d in enumerate(source.meta.level_dimensions)]
        self.dimensions = (n, n)
        self.level_dimensions = tuple((int(n / d), int(n / d)) for d in self.level_downsamples)

    def read_region(self, location, level, size) -> np.ndarray:
        image = self.levels[level]
        d = self.level_downsamples[level]
        x0, y0 = int(location[0] / d), int(location[1] / d)
        rows = np.arange(y0, y0 + size[1]) % image.shape[0]
        cols = np.arange(x0, x0 + size[0]) % image.shape[1]
        return image[rows][:, cols]

    def close(self) -> None:
        pass


def memory(args) -> None:
    import tempfile

    from nuclei.slide import iter_slide_nuclei, make_segmenter
    from slidestream.pipeline.runner import peak_rss_mb

    if args.threads:
        torch.set_num_threads(args.threads)
    model = "classical" if args.classical else None
    config = SlideNucleiConfig(workers=1)
    source = wsi.open_slide(args.slide)
    slide = wsi.Slide(PeriodicReader(source, args.virtual), source.path) if args.virtual else source
    before = peak_rss_mb()
    start = time.perf_counter()
    dims = slide.meta.dimensions
    if args.max_shards:
        segmenter = make_segmenter(model, device=args.device)
        plan = plan_slide(slide, segmenter.mpp, config)
        shards = list(range(min(args.max_shards, plan.n_shards)))
        count = sum(len(t) for _, t in iter_slide_nuclei(plan, segmenter, shards=shards))
        tiles = sum(len(plan.shard_range(s)) for s in shards)
        what = f"plan {len(plan)} tiles over {plan.region_mm2:.0f} mm^2 of tissue; first {len(shards)} shards"
    else:
        with tempfile.TemporaryDirectory() as out:
            result = nuclei.write_slide_nuclei(slide, out, model=model, device=args.device, config=config)
        count, tiles = result.nuclei, result.tiles
        what = f"whole slide, {result.region_mm2:.1f} mm^2 of tissue"
    seconds = time.perf_counter() - start
    print(f"{'virtual ' if args.virtual else ''}{dims[0]} x {dims[1]} px ({args.slide}): {what}: {tiles} tiles, "
          f"{count} nuclei, {seconds:.0f} s ({tiles * 256 * 256 / 1e6 / seconds:.2f} MPix/s); "
          f"peak RSS {peak_rss_mb():.0f} MB (before segmenting: {before:.0f} MB)")  # fmt: skip


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["slide-quality", "slide-speed", "slide-memory"])
    parser.add_argument("--slide", help="slide file (default: the held-out synthetic slide)")
    parser.add_argument("--box", type=int, default=1024, help="side of the square measured, px at 0.5 um/px")
    parser.add_argument("--classical", action="store_true")
    parser.add_argument("--model", help="model folder (default: the shipped weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--virtual", type=int, help="slide-memory: an N x N px slide repeating --slide")
    parser.add_argument("--max-shards", type=int, help="slide-memory: segment only the first K shards")
    args = parser.parse_args(argv)
    {"slide-quality": quality, "slide-speed": speed, "slide-memory": memory}[args.what](args)
