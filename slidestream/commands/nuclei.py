"""`slidestream nuclei train|segment|evaluate|slides`: train the nuclei CNN, segment an image, score against a
reference, and segment every slide of a results folder."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from slidestream.commands._common import (
    add_quiet,
    add_scheduler_options,
    fraction,
    non_negative_float,
    non_negative_int,
    open_fraction,
    output_folder,
    positive_float,
    positive_int,
    show_progress,
    slide_mpp,
)
from wsi.atomic import atomic_file

DEVICE_HELP = "auto (cuda if present), cpu, cuda, cuda:1 ... (default auto)"
TTA_HELP = (
    "test-time augmentation: the CNN's maps averaged over the four flips (4 forward passes; about 3.5x the "
    "end-to-end time of segment on CPU)"
)


def register(sub) -> None:
    p = sub.add_parser("nuclei", help="nuclei CNN: train, segment an image, evaluate against references")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    t = verbs.add_parser(
        "train",
        help="train a nuclei model on synthetic tiles or a labelled dataset folder",
        description="Trains the HoVer-Net style nuclei CNN. --data synthetic renders --n-synthetic training "
        "tiles and --n-val held-out tiles (other seeds); a folder is read as PanNuke, MoNuSeg/Kumar, "
        "CoNSeP/Lizard or image + instance-mask pairs, with --val-fraction of it held out. --self-train adds real, "
        "unlabelled slides: the teacher (--init, else the shipped weights) labels their tissue tiles under eight "
        "flips/rotations, keeps the confident nuclei, masks uncertain pixels out of the loss, and --self-train-share "
        "of the training samples come from them. --real adds a labelled dataset folder (real annotations) to --data: "
        "--real-share of the samples come from it, resampled to the model's mpp; --real-val-blocks holds out "
        "blocks of a --real-grid grid over each of its images (else --val-fraction of its images; where that is "
        "none, the grid's anti-diagonal blocks), and the "
        "best epoch is then picked by PQ on those (the --data validation is logged beside it). Writes "
        "config.json + model.safetensors (best epoch by validation PQ), last/ and history.json into -o.",
    )
    t.add_argument("--data", required=True, help="'synthetic' or a dataset folder")
    t.add_argument("-o", "--out", required=True, type=output_folder, help="model folder")
    t.add_argument("--epochs", type=positive_int, default=20,
                   help="training epochs; the best one by validation PQ is kept (default 20)")  # fmt: skip
    t.add_argument("--device", default="auto", help=DEVICE_HELP)
    t.add_argument("--batch-size", type=positive_int, default=8, help="crops per training batch (default 8)")
    t.add_argument("--lr", type=positive_float, default=2e-3, help="learning rate")
    t.add_argument(
        "--steps-per-epoch", type=positive_int, help="batches per epoch (default: one pass over the tiles)"
    )
    t.add_argument("--crop", type=positive_int, default=160, help="training crop side in px (multiple of 32)")
    t.add_argument("--n-synthetic", type=positive_int, default=1000, help="synthetic training tiles (256 px)")
    t.add_argument("--n-val", type=positive_int, default=32, help="held-out synthetic validation tiles")
    t.add_argument("--tile-cache", type=Path, help="keep the rendered synthetic tiles in this .npz (reused)")
    t.add_argument("--val-fraction", type=fraction, help="share of a dataset folder held out (default 0.1)")
    t.add_argument("--mpp", type=positive_float, help="resolution of a dataset folder without one (um/px)")
    t.add_argument("--encoder", default=None, help="timm encoder name (default: the ModelConfig default)")
    t.add_argument("--init", help="continue from this model folder")
    t.add_argument("--full-resolution", action="store_true",
                   help="heads at stride 1 (a full-resolution decoder stage) instead of stride 2 upsampled, "
                   "1.7-2.3x the CPU time (no gain in the one comparison so far: benchmarks/RESULTS.md, GPU "
                   "session); with --init, the tensors that fit are kept")  # fmt: skip
    t.add_argument("--decoder-channels", type=positive_int, nargs="+", metavar="C",
                   help="decoder widths at strides 16, 8, 4, 2 (and 1 with --full-resolution)")  # fmt: skip
    t.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA (ignored on CPU)")
    t.add_argument("--render-workers", type=positive_int, default=1,
                   help="processes rendering the synthetic tiles (same tiles whatever the number)")  # fmt: skip
    t.add_argument(
        "--time-budget", type=positive_float, help="stop after this many minutes (schedule follows the clock)"
    )
    t.add_argument("--threads", type=positive_int, help="torch CPU threads")
    t.add_argument("--boundary-weight", type=non_negative_float, default=0.0,
                   help="extra HV-loss weight on pixels of nuclei that touch another nucleus (0: plain HoVer-Net)")  # fmt: skip
    t.add_argument("--workers", type=non_negative_int, default=1, help="data-loading processes")
    t.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the synthetic tiles (validation tiles: seed + 10000), the dataset split, the "
                   "augmentation and the weights' initialisation (default 0)")  # fmt: skip
    t.add_argument("--self-train", nargs="+", metavar="SLIDE", help="real unlabelled slides to pseudo-label")
    t.add_argument("--self-train-share", type=open_fraction, default=0.3,
                   help="share of training samples drawn from the pseudo-labelled tiles")  # fmt: skip
    t.add_argument("--self-train-tiles", type=positive_int, default=64,
                   help="tissue tiles (512 px at the model's mpp) pseudo-labelled per slide, at most")  # fmt: skip
    t.add_argument(
        "--real", metavar="DIR", help="a labelled dataset folder mixed into --data (any known layout)"
    )
    t.add_argument("--real-share", type=open_fraction, default=0.5,
                   help="share of training samples drawn from --real")  # fmt: skip
    t.add_argument("--real-mpp", type=positive_float,
                   help="resolution of --real when it records none (um/px); a dataset.json 'mpp' wins")  # fmt: skip
    t.add_argument("--real-grid", type=positive_int,
                   help="--real images are cut into this many x this many blocks for --real-val-blocks "
                   "(default 3)")  # fmt: skip
    t.add_argument("--real-val-blocks", type=_block_or_none, nargs="+", metavar="B",
                   help="blocks held out for validation (numbered row by row from 0 at the top left), or 'none': "
                   "every block trained on (a final refit once the recipe is chosen; the best epoch is then "
                   "picked on the --data validation, and last/ is the last epoch)")  # fmt: skip
    add_quiet(t)
    t.set_defaults(func=run_train)

    s = verbs.add_parser(
        "segment",
        help="segment the nuclei of an image into an instance label TIFF",
        description="Runs nuclei.segment on IMAGE (PNG/JPEG/TIFF) at --mpp and writes int32 instance labels "
        "(0 = background) as a TIFF.",
    )
    s.add_argument("image", metavar="IMAGE", help="RGB image file read with Pillow (PNG, JPEG, TIFF)")
    s.add_argument("--mpp", type=slide_mpp, required=True, help="resolution of IMAGE in um/px")
    s.add_argument("-o", "--out", required=True, help="output label TIFF")
    s.add_argument("--model", help="model folder (default: the shipped weights)")
    s.add_argument("--classical", action="store_true", help="use the classical baseline instead of the CNN")
    s.add_argument("--tta", action="store_true", help=TTA_HELP)
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.set_defaults(func=run_segment)

    e = verbs.add_parser(
        "evaluate",
        help="score CNN and classical segmentation of an image against reference polygons or labels",
        description="Segments IMAGE with the CNN (--model or the shipped weights) and the classical baseline "
        "and prints detection P/R/F1, Dice, AJI and PQ against REFERENCE (GeoJSON polygons in pixel "
        "coordinates, or an instance label image). With --synthetic N, scores N held-out synthetic tiles "
        "instead (seeds never used for training), pooled over the tiles.",
    )
    e.add_argument("image", metavar="IMAGE", nargs="?",
                   help="RGB image file read with Pillow (PNG, JPEG, TIFF); with REFERENCE and --mpp, unless "
                   "--synthetic")  # fmt: skip
    e.add_argument("reference", metavar="REFERENCE", nargs="?",
                   help="the reference nuclei of IMAGE: a .geojson/.json of polygons in IMAGE's pixel coordinates, "
                   "or an instance label image of the same size (0 = background)")  # fmt: skip
    e.add_argument("--mpp", type=slide_mpp, help="resolution of IMAGE in um/px")
    e.add_argument(
        "--synthetic", type=positive_int, metavar="N", help="score N held-out synthetic 256 px tiles"
    )
    e.add_argument("--model", help="model folder (default: the shipped weights)")
    e.add_argument("--tta", action="store_true", help=TTA_HELP)
    e.add_argument("--device", default="auto", help=DEVICE_HELP)
    e.add_argument("--json", help="also write the scores to this JSON file")
    e.set_defaults(func=run_evaluate)

    r = verbs.add_parser(
        "slides",
        help="nuclei of every slide of a results folder (slidestream run / tile output)",
        description="Runs the nuclei step on every RESULTS/slides/<slide_id>/ that has a patch store, on dask, "
        "as `slidestream run --steps nuclei` does: nuclei.parquet (GeoParquet), nuclei.geojson.gz (QuPath cells, "
        "or detections), nuclei.json, scores/nuclei in the store and heatmap_nuclei.png per slide; RESULTS/"
        "manifest.jsonl and summary.csv (nuclei count, density, type fractions) are updated. Finished slides are "
        "skipped and interrupted ones resume per shard of tiles; a failing slide is recorded and the others go "
        "on (exit status 1).",
    )
    r.add_argument(
        "results", metavar="RESULTS", help="results folder of `slidestream run` or `slidestream tile`"
    )
    r.add_argument("--classical", action="store_true", help="the classical baseline instead of the CNN")
    r.add_argument("--model", help="model folder (default: the shipped weights)")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)
    r.add_argument("--tta", action="store_true", help=TTA_HELP)
    r.add_argument("--detections", action="store_true",
                   help="QuPath detections instead of cells in nuclei.geojson.gz")  # fmt: skip
    r.add_argument("--batch-size", type=positive_int, default=8, help="tiles per forward pass")
    r.add_argument(
        "--slide-mpp", type=slide_mpp, help="the slides' own um/px, for files whose metadata lacks it"
    )
    r.add_argument(
        "--workers", type=positive_int, default=1, help="slides in parallel (dask worker processes)"
    )
    r.add_argument("--threads", type=positive_int, help="torch threads per slide (default: cores / workers)")
    add_scheduler_options(r)
    r.add_argument("--overwrite", action="store_true", help="redo slides whose nuclei are already done")
    add_quiet(r)
    r.set_defaults(func=run_slides)


@dataclass(frozen=True)
class TrainCommand:
    data: str
    out: Path
    n_synthetic: int
    n_val: int
    val_fraction: float
    mpp: float | None
    seed: int
    encoder: str | None
    tile_cache: Path | None
    render_workers: int = 1


def load_training_data(cmd: TrainCommand, progress: bool):
    """(train, val) NucleiTiles for `--data`."""
    from nuclei.datasets import cached_synthetic_tiles, synthetic_tiles

    if cmd.data == "synthetic":
        if cmd.tile_cache:
            train = cached_synthetic_tiles(cmd.tile_cache, cmd.n_synthetic, seed=cmd.seed, progress=progress,
                                           workers=cmd.render_workers)  # fmt: skip
        else:
            train = synthetic_tiles(
                cmd.n_synthetic, seed=cmd.seed, progress=progress, workers=cmd.render_workers
            )
        val = synthetic_tiles(
            cmd.n_val, seed=cmd.seed + 10_000, progress=progress, workers=cmd.render_workers
        )
        return train, val
    from nuclei.datasets import image_split, load_dataset

    tiles = load_dataset(cmd.data, mpp=cmd.mpp)
    train, val, _ = image_split(tiles, cmd.val_fraction, cmd.seed)
    return train, (val if len(val) else None)


def run_train(args) -> int:
    from nuclei.augment import AugmentConfig
    from nuclei.model import ModelConfig, read_config
    from nuclei.train import TrainConfig, train

    progress = show_progress(args)
    cmd = TrainCommand(args.data, Path(args.out), args.n_synthetic, args.n_val, _val_fraction(args), args.mpp,
                       args.seed, args.encoder, args.tile_cache, args.render_workers)  # fmt: skip
    if args.crop % 32:
        raise SystemExit(f"--crop must be a multiple of 32, got {args.crop}")
    # Before any tile is rendered: a slide that cannot be read fails now, not minutes later.
    if args.self_train and (problem := _unreadable_slide(args.self_train)):
        print(f"error: --self-train: {problem}", file=sys.stderr)
        return 2
    # --real is read and split before any tile is rendered too.
    real = _load_real(args) if args.real else None
    train_tiles, val_tiles = load_training_data(cmd, progress)
    self_train, teacher = {}, None
    if args.self_train:
        train_tiles, self_train, teacher = _add_pseudo_labels(train_tiles, args, progress)
    # The architecture: --init's (or the default), changed by --encoder / --full-resolution / --decoder-channels;
    # a changed one starts from every tensor of --init that fits (nuclei.train.train).
    model_config = read_config(args.init)[0] if args.init else ModelConfig()
    if cmd.encoder:
        model_config = replace(model_config, encoder=cmd.encoder)
    if args.full_resolution or args.decoder_channels:
        channels = tuple(args.decoder_channels or model_config.decoder_channels)
        full = args.full_resolution or model_config.full_resolution
        if full and len(channels) == 4:  # the stride-1 stage as wide as the stride-2 one
            channels = (*channels, channels[-1])
        try:
            model_config = replace(model_config, full_resolution=full, decoder_channels=channels)
        except ValueError as exc:
            raise SystemExit(f"--decoder-channels: {exc}") from None
    if train_tiles.mpp:
        model_config = replace(model_config, mpp=train_tiles.mpp)
    val_sets = val_tiles
    real_summary = {}
    if real is not None:
        train_tiles, val_sets, real_summary = _add_real(
            train_tiles, val_tiles, real, args, model_config.mpp, model_config.classes
        )
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
                         augment=AugmentConfig(crop=args.crop), seed=args.seed, loader_workers=args.workers,
                         threads=args.threads, init=args.init,
                         steps_per_epoch=args.steps_per_epoch, boundary_weight=args.boundary_weight,
                         time_budget_s=args.time_budget * 60 if args.time_budget else None,
                         amp=args.amp)  # fmt: skip
    provenance = {
        "command": "slidestream nuclei " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["nuclei"] else "",
        **({"self_train": self_train} if self_train else {}),
        **({"real": real_summary} if real_summary else {}),
    }
    # The teacher loaded from --init is the starting point too: it is not loaded twice.
    history = train(train_tiles, config, cmd.out, val=val_sets, model_config=model_config, progress=True,
                    provenance=provenance, model=teacher if args.init else None)  # fmt: skip
    print(json.dumps(history[-1]))
    print(f"model written to {cmd.out}")
    return 0


def _block_or_none(text: str) -> int | str:
    """A --real-val-blocks value: a block number or 'none'."""
    if text.lower() == "none":
        return "none"
    return non_negative_int(text)


def _val_fraction(args) -> float:
    """--val-fraction as given, else its default 0.1."""
    return 0.1 if args.val_fraction is None else args.val_fraction


def _val_blocks(args):
    """--real-val-blocks as `real_split` takes it: None, a list of blocks, or 'none' (which must stand alone, and
    leaves nothing for --real-grid, nor for --val-fraction unless --data is a folder, to split)."""
    blocks = args.real_val_blocks
    if blocks is None or "none" not in blocks:
        return blocks
    if len(blocks) > 1:
        raise SystemExit(
            f"--real-val-blocks: 'none' holds out nothing and takes no block numbers, got {blocks}"
        )
    if args.real_grid is not None:
        raise SystemExit(f"--real-grid {args.real_grid} with --real-val-blocks none: no block of --real is held "
                         "out, so there is no grid to cut; drop --real-grid")  # fmt: skip
    if args.val_fraction is not None and getattr(args, "data", None) == "synthetic":
        raise SystemExit(f"--val-fraction {args.val_fraction} with --data synthetic and --real-val-blocks none: "
                         "no image of --real is held out and synthetic validation is --n-val; drop "
                         "--val-fraction")  # fmt: skip
    return "none"


def _load_real(args):
    """(train, val, what was done) of the --real folder, split by --real-val-blocks or --val-fraction (or, when
    that holds out no image, by the anti-diagonal blocks of the --real-grid grid): `nuclei.datasets.real_split`."""
    from nuclei.datasets import DatasetError, real_split

    try:
        blocks = _val_blocks(args)
        return real_split(args.real, args.real_mpp, args.real_grid or 3, blocks,
                          0.0 if blocks == "none" else _val_fraction(args), args.seed,
                          log=lambda line: print(line, flush=True))  # fmt: skip
    except DatasetError as exc:
        raise SystemExit(f"--real: {exc}") from None
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _add_real(train_tiles, val_tiles, real, args, mpp: float, classes: tuple[str, ...]):
    """Training tiles with `--real-share` of the samples from the --real part `real` (`_load_real`), resampled to
    `mpp`, the mix carrying the model's `classes`; the validation sets ({"real": its held-out part, "synthetic"
    or "data": --data's}; the first picks the best epoch) and what was done."""
    from nuclei.datasets import resample_tiles
    from nuclei.selftrain import mix_tiles, mixed_share

    real_train, real_val, summary = real
    real_train, real_val = resample_tiles(real_train, mpp), resample_tiles(real_val, mpp)
    side = min(min(i.shape) for i in real_train.instances)
    if side < args.crop:  # augment would upscale it to the crop, undoing the resampling to the model's mpp
        what = "--real-grid too fine: blocks" if "grid" in summary["split"] else "--real: images"
        raise SystemExit(f"{what} of {side} px at {mpp} um/px < --crop {args.crop}")
    mixed = mix_tiles(train_tiles, real_train, args.real_share, classes=classes, seed=args.seed)
    share = mixed_share(train_tiles, real_train, args.real_share)
    val_sets = {"real": real_val, ("synthetic" if args.data == "synthetic" else "data"): val_tiles}
    nuclei_n = [int(sum(len(np.unique(i)) - 1 for i in t.instances)) for t in (real_train, real_val)]
    summary = {**summary, "resampled_to": mpp, "share": args.real_share, "actual_share": round(share, 4),
               "train_tiles": len(real_train), "train_nuclei": nuclei_n[0], "val_tiles": len(real_val),
               "val_nuclei": nuclei_n[1]}  # fmt: skip
    print(f"real: {args.real} at {summary['mpp']} um/px -> {mpp}; {len(real_train)} training tiles "
          f"({nuclei_n[0]} nuclei), {len(real_val)} validation tiles ({nuclei_n[1]} nuclei), {share:.0%} of the "
          "samples", flush=True)  # fmt: skip
    return mixed, val_sets, summary


def _unreadable_slide(paths) -> str | None:
    """Why the first of `paths` that cannot be opened as a slide cannot be, or None when all open."""
    import wsi

    for path in paths:
        try:
            with wsi.open_slide(path):
                pass
        except wsi.SlideError as exc:
            return str(exc)
    return None


def _add_pseudo_labels(train_tiles, args, progress: bool):
    """Training tiles mixed with the teacher's pseudo-labelled tiles of --self-train slides, what was done, and the
    teacher."""
    import nuclei
    from nuclei.selftrain import PseudoLabelConfig, mix_tiles, pseudo_label_slides

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    teacher = nuclei.load_model(args.init) if args.init else nuclei.default_model()
    if train_tiles.mpp and abs(teacher.config.mpp - train_tiles.mpp) > 1e-6:
        raise SystemExit(f"--self-train: the teacher works at {teacher.config.mpp} um/px, the training data is at "
                         f"{train_tiles.mpp}")  # fmt: skip
    config = PseudoLabelConfig(max_tiles=args.self_train_tiles, seed=args.seed)
    pseudo = pseudo_label_slides(teacher, args.self_train, config, device=args.device, progress=progress)
    kept = sum(int(i.max()) for i in pseudo.instances)
    ignored = float(np.mean([ig.mean() for ig in pseudo.ignore]))
    summary = {"slides": [str(p) for p in args.self_train], "tiles": len(pseudo), "nuclei_kept": kept,
               "ignored_pixel_share": round(ignored, 4), "share": args.self_train_share,
               "teacher": str(args.init or "shipped weights"), "config": asdict(config)}  # fmt: skip
    print(f"self-training: {len(pseudo)} tiles, {kept} confident nuclei, {ignored:.1%} of pixels ignored")
    return mix_tiles(train_tiles, pseudo, args.self_train_share), summary, teacher


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def run_segment(args) -> int:
    import tifffile

    import nuclei

    if args.classical and args.tta:
        raise SystemExit("--tta applies to the CNN, not to --classical")
    image = _read_image(args.image)
    if args.classical:
        labels = nuclei.segment_classical(image, mpp=args.mpp)
    else:
        model = nuclei.load_model(args.model) if args.model else None
        labels = nuclei.segment(image, mpp=args.mpp, model=model, device=args.device, tta=args.tta)
    out = Path(args.out)
    with atomic_file(out) as tmp:
        tifffile.imwrite(tmp, labels.astype(np.int32), compression="zlib")
    print(f"{int(labels.max())} nuclei -> {out}")
    return 0


def _pairs_to_score(args):
    """(images, truths, mpp, what) for `evaluate`: one image + reference, or held-out synthetic tiles."""
    import nuclei
    from nuclei.datasets import rasterize_polygons, synthetic_tiles

    if args.synthetic:
        tiles = synthetic_tiles(args.synthetic, seed=HELD_OUT_SEED)
        return tiles.images, tiles.instances, tiles.mpp, f"{args.synthetic} held-out synthetic tiles"
    if not (args.image and args.reference and args.mpp):
        raise SystemExit("evaluate needs IMAGE REFERENCE --mpp, or --synthetic N")
    image = _read_image(args.image)
    if args.reference.endswith((".geojson", ".json")):
        truth = rasterize_polygons(nuclei.datasets.read_geojson_polygons(args.reference), image.shape[:2])
    else:
        truth = _read_image(args.reference).astype(np.int32)
    return [image], [truth], args.mpp, args.image


HELD_OUT_SEED = 20_000  # training renders seeds 0.., validation seed + 10_000: these tiles are never seen


def run_evaluate(args) -> int:
    from dataclasses import asdict

    import nuclei
    from nuclei.model import thresholds

    images, truths, mpp, what = _pairs_to_score(args)
    model = nuclei.load_model(args.model) if args.model else None
    used = thresholds(model or nuclei.default_model("cpu"))  # the CNN's, from its folder (else the defaults)
    results = {"data": what, "mpp": mpp, "reference_nuclei": int(sum(len(np.unique(t)) - 1 for t in truths)),
               "postprocess": asdict(used), "tta": bool(args.tta)}  # fmt: skip
    for name in ("cnn", "classical"):
        scores, found = [], 0
        for image, truth in zip(images, truths, strict=True):
            if name == "cnn":
                labels = nuclei.segment(image, mpp=mpp, model=model, device=args.device, tta=args.tta)
            else:
                labels = nuclei.segment_classical(image, mpp=mpp)
            found += int(len(np.unique(labels)) - 1)
            scores.append(nuclei.metrics.score(truth, labels))
        s = nuclei.metrics.aggregate(scores).as_dict()
        r = results[name] = {k: round(float(v), 4) for k, v in s.items()}
        print(f"{name:9s} nuclei {found:5d}  P {r['precision']:.3f}  R {r['recall']:.3f}  "
              f"F1 {r['f1']:.3f}  Dice {r['dice']:.3f}  AJI {r['aji']:.3f}  PQ {r['pq']:.3f}")  # fmt: skip
    print(f"({what}: {results['reference_nuclei']} reference nuclei at {mpp} um/px; the CNN's post-processing "
          f"{results['postprocess']}{'; test-time augmentation (4 flips)' if args.tta else ''})")  # fmt: skip
    if args.json:
        with atomic_file(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def run_slides(args) -> int:
    import os

    from slidestream.discovery import SlideInput
    from slidestream.mil_slides import find_stores
    from slidestream.pipeline import load_config, run_batch
    from slidestream.pipeline.report import report
    from tiling import PatchStore

    try:
        stores = find_stores(args.results)
        slides = [SlideInput(slide_id, Path(PatchStore.open(path).attrs["slide"]["path"]))
                  for slide_id, path in stores.items()]  # fmt: skip
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
        config = load_config(
            None, out=args.results, steps=("nuclei",), slide_workers=args.workers, threads_per_worker=threads,
            scheduler_address=args.scheduler_address, scheduler_timeout=args.scheduler_timeout,
            overwrite=True if args.overwrite else None, progress=show_progress(args),
            **{"tiling.slide_mpp": args.slide_mpp, "nuclei.classical": args.classical or None,
               "nuclei.model": args.model, "nuclei.device": args.device, "nuclei.batch_size": args.batch_size,
               "nuclei.tta": args.tta or None,
               "nuclei.object_type": "detection" if args.detections else None},
        )  # fmt: skip
        result = run_batch(slides, config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return report(result, len(slides))
