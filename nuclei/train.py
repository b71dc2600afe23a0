"""Training the nuclei CNN: augmented tiles -> HoVer-Net losses -> per-epoch validation -> checkpoints.

    history = nuclei.train.train(tiles, TrainConfig(epochs=30), out_dir="model_dir", val=val_tiles)

Losses: nucleus probability with BCE + soft Dice; HV maps with MSE + mean squared gradient error inside nuclei
(HoVer-Net), optionally weighted up on the pixels of nuclei that touch another nucleus (`boundary_weight`:
where touching nuclei get merged, the HV maps are what must separate them); types with cross-entropy (pixels
of `UNKNOWN_TYPE` skipped). Pixels a dataset marks `ignore` (pseudo-labels' uncertain ones) carry no loss at
all. After each epoch the model is scored on `val` (instances from the same post-processing `segment` uses)
and saved to `out_dir` with its metrics; the best epoch by PQ is kept as `out_dir/` itself, every epoch's
metrics go to `out_dir/history.json`. `val` may name several validation sets (e.g. real held-out blocks and
synthetic tiles): each is scored every epoch (`val_<name>_pq`, ...) and the first one picks the best epoch.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch.utils.data import DataLoader, Dataset

from nuclei.augment import AugmentConfig, augment
from nuclei.datasets.base import UNKNOWN_TYPE, NucleiTiles
from nuclei.inference import predict_instances, resolve_device
from nuclei.metrics import aggregate, score
from nuclei.model import (
    ModelConfig,
    NucleiNet,
    NucleiOutput,
    create_model,
    load_model,
    save_model,
    transfer_weights,
)
from nuclei.targets import hv_maps
from wsi.atomic import atomic_file

__all__ = ["TrainConfig", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; `init` continues from a saved model directory."""

    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    steps_per_epoch: int | None = None  # None: one pass over the tiles (each a random crop)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    type_weight: float = 0.5
    seed: int = 0
    device: str = "auto"
    loader_workers: int = 1
    threads: int | None = None
    init: str | None = None
    time_budget_s: float | None = None  # stop after this long; the learning-rate schedule follows the clock
    boundary_weight: float = 0.0  # extra HV-loss weight on nucleus pixels within 2 px of another nucleus
    amp: bool = False  # bfloat16 autocast of the forward pass on CUDA (ignored on CPU); losses in float32


class _TrainSet(Dataset):
    """Random augmented crops of the tiles, with their targets as tensors."""

    def __init__(self, tiles: NucleiTiles, config: AugmentConfig, seed: int, length: int, use_types: bool,
                 boundary_weight: float = 0.0):  # fmt: skip
        self.tiles, self.config, self.seed, self.length = tiles, config, seed, length
        self.use_types, self.boundary_weight = use_types, boundary_weight
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def _types(self, k: int) -> np.ndarray:
        if self.use_types:
            return self.tiles.type_map(k)
        return np.zeros(self.tiles.instances[k].shape, np.uint8)  # type head not trained on these tiles

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        k = int(rng.integers(len(self.tiles)))
        inst = self.tiles.instances[k]
        if self.tiles.ignore is not None:  # -1 carries "no label" through the geometric augmentation
            inst = np.where(self.tiles.ignore[k], -1, inst)
        img, inst, typ = augment(self.tiles.images[k], inst, self._types(k), rng, self.config)
        valid = inst >= 0
        inst = np.maximum(inst, 0)
        # The HV-loss weight of touching borders; two rank filters per crop only when it is asked for.
        weight = (
            1.0 + self.boundary_weight * touching_pixels(inst)
            if self.boundary_weight
            else np.ones(inst.shape)
        )
        return (
            torch.from_numpy(img.transpose(2, 0, 1).copy()),
            torch.from_numpy((inst > 0).astype(np.float32))[None],
            torch.from_numpy(hv_maps(inst)),
            torch.from_numpy(np.where(valid, typ, UNKNOWN_TYPE).astype(np.int64)),
            torch.from_numpy(valid.astype(np.float32))[None],
            torch.from_numpy(weight.astype(np.float32))[None],
        )


def touching_pixels(instances: np.ndarray, reach: int = 2) -> np.ndarray:
    """(H, W) bool: nucleus pixels with a pixel of another nucleus within `reach` px (a square window)."""
    size = 2 * reach + 1
    high = ndi.maximum_filter(instances, size=size, mode="nearest")
    big = np.iinfo(np.int32).max
    low = ndi.minimum_filter(
        np.where(instances > 0, instances, big).astype(np.int32), size=size, mode="nearest"
    )
    return (instances > 0) & ((high > instances) | (low < instances))


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d/dx of channel 0 and d/dy of channel 1 of a (B, 2, H, W) tensor."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device) / 4
    gx = F.conv2d(x[:, :1], kx.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(x[:, 1:], kx.t().contiguous().view(1, 1, 3, 3), padding=1)
    return gx, gy


def losses(model_out, fg: torch.Tensor, hv: torch.Tensor, types: torch.Tensor, type_weight: float,
           valid: torch.Tensor | None = None, hv_weight: torch.Tensor | None = None) -> dict:  # fmt: skip
    """The HoVer-Net loss terms (dict of scalars; 'total' is what is minimised); `valid` (B, 1, H, W) is 0 on
    pixels without a label (they add nothing), None when every pixel has one; `hv_weight` (B, 1, H, W) scales
    each pixel's HV terms (MSE and gradient error; still divided by the unweighted pixel counts), None for 1.
    Types equal to `UNKNOWN_TYPE` add no type loss."""
    logits = model_out.logits
    if valid is None:
        valid = torch.ones_like(fg)
    n_valid = valid.sum().clamp(min=1)
    bce = (F.binary_cross_entropy_with_logits(logits, fg, reduction="none") * valid).sum() / n_valid
    p = torch.sigmoid(logits) * valid
    dice = 1 - (2 * (p * fg).sum() + 1) / (p.sum() + fg.sum() + 1)
    w = valid if hv_weight is None else valid * hv_weight
    mse = (((model_out.hv - hv) ** 2) * w).sum() / (2 * n_valid)
    pgx, pgy = _sobel(model_out.hv)
    tgx, tgy = _sobel(hv)
    # Gradients are 3x3: only nucleus pixels whose whole neighbourhood is labelled count.
    inner = fg * -F.max_pool2d(-valid, 3, stride=1, padding=1)
    scale = inner if hv_weight is None else inner * hv_weight
    msge = (((pgx - tgx) ** 2 + (pgy - tgy) ** 2) * scale).sum() / (inner.sum() + 1)
    out = {"bce": bce, "dice": dice, "mse": mse, "msge": msge}
    total = bce + dice + mse + 2 * msge
    known = types != UNKNOWN_TYPE
    if model_out.types is not None and type_weight > 0 and bool(known.any()) and int(types[known].max()) > 0:
        ce = F.cross_entropy(model_out.types, types, ignore_index=UNKNOWN_TYPE)
        out["type_ce"] = ce
        total = total + type_weight * ce
    out["total"] = total
    return out


def evaluate(model: NucleiNet, tiles: NucleiTiles, device: torch.device | str = "cpu") -> dict[str, float]:
    """Pooled instance metrics of `model` over `tiles` (same post-processing as `segment`)."""
    scores = []
    for img, inst in zip(tiles.images, tiles.instances, strict=True):
        pred = predict_instances(model, img, device=device)
        scores.append(score(inst, pred))
    agg = aggregate(scores)
    return {k: round(float(v), 4) for k, v in agg.as_dict().items() if k in ("f1", "dice", "aji", "pq", "sq")}


def train(tiles: NucleiTiles, config: TrainConfig | None = None, out_dir: str | os.PathLike = "nuclei_model",
          val: NucleiTiles | dict[str, NucleiTiles] | None = None, model_config: ModelConfig | None = None, progress: bool = True,
          provenance: dict | None = None, model: NucleiNet | None = None) -> list[dict]:  # fmt: skip
    """Train on `tiles` and write the best model (by validation PQ, else the last) to `out_dir`.

    `model` starts training from a model already in memory (it is trained in place), e.g. the self-training
    teacher loaded from `config.init`, instead of loading `config.init` again. When `model_config` differs from
    the starting model's (e.g. `full_resolution` added), a new model of `model_config` starts from every tensor
    of the starting one that fits (`transfer_weights`); the others start fresh. `val` as a dict {name: tiles}
    records each set's metrics as `val_<name>_<metric>`; the first set's PQ picks the best epoch."""
    config = config or TrainConfig()
    if len(tiles) == 0:
        raise ValueError("no training tiles")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    if model is not None:
        model = model.to(device)
    elif config.init:
        model = load_model(config.init, device=device)
    else:
        model = create_model(model_config).to(device)
    if model_config is not None and model.config != model_config:
        start, model = model, create_model(model_config).to(device)
        fresh = transfer_weights(model, start)
        if fresh:  # (an mpp or class change alone keeps every tensor)
            print(f"architecture changed from the starting model's: {len(fresh)} tensors start fresh "
                  f"({', '.join(sorted({k.rsplit('.', 2)[0] for k in fresh})[:6])})", flush=True)  # fmt: skip
        # The thresholds' sizes are pixels at the model's mpp: they carry over only while the mpp stays.
        kept = getattr(start, "postprocess", None)
        if kept is not None and start.config.mpp != model_config.mpp:
            print(f"post-processing thresholds of the starting model dropped: its mpp {start.config.mpp} is "
                  f"not the new {model_config.mpp} (sizes are pixels at the model's mpp)", flush=True)  # fmt: skip
            kept = None
        model.postprocess = kept
    amp = config.amp and device.type == "cuda"
    steps = config.steps_per_epoch or max(1, len(tiles) // config.batch_size)
    # Types train the type head only when the dataset's classes are the model's (e.g. PanNuke, synthetic).
    use_types = tiles.types is not None and tuple(tiles.classes or ()) == tuple(model.config.classes)
    dataset = _TrainSet(tiles, config.augment, config.seed, steps * config.batch_size, use_types,
                        config.boundary_weight)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = _Schedule(config.lr, steps * config.epochs, config.time_budget_s)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best = -1.0
    val_sets, select = _val_sets(val)
    base_prov = {
        "train_config": json.loads(json.dumps(asdict(config), default=str)),
        "train_source": tiles.source,
        "n_train_tiles": len(tiles),
        **(provenance or {}),
    }
    for epoch in range(config.epochs):
        dataset.epoch = epoch
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.loader_workers,
                            persistent_workers=False)  # fmt: skip
        model.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        bar = loader
        if progress:
            from tqdm import tqdm

            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        for img, fg, hv, typ, valid, weight in bar:
            img, fg, hv, typ, valid, weight = (t.to(device) for t in (img, fg, hv, typ, valid, weight))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = model(model.normalise(img))
            if amp:
                out = NucleiOutput(
                    out.logits.float(), out.hv.float(), None if out.types is None else out.types.float()
                )
            hv_weight = weight if config.boundary_weight else None
            parts = losses(out, fg, hv, typ, config.type_weight, valid, hv_weight)
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            for group in opt.param_groups:
                group["lr"] = schedule.lr()
            opt.step()
            schedule.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if progress:
                bar.set_postfix(loss=f"{float(parts['total'].detach()):.3f}")
        record = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 1), "lr": round(schedule.lr(), 6)}
        record.update({f"loss_{k}": round(v / steps, 4) for k, v in sums.items()})
        model.eval()
        for prefix, tiles_v in val_sets.items():
            record.update({f"{prefix}{k}": v for k, v in evaluate(model, tiles_v, device).items()})
        history.append(record)
        if progress:
            print(json.dumps(record), flush=True)
        metric = record.get(select, epoch)
        prov = {
            **base_prov,
            "epochs_done": epoch + 1,
            "selected_by": select if val_sets else "last epoch",
            "val": {k: v for k, v in record.items() if k.startswith("val_")},
        }
        save_model(model, out_dir / "last", provenance=prov)
        if metric >= best:
            best = metric
            save_model(model, out_dir, provenance=prov)
        _write_json(out_dir / "history.json", history)
        if schedule.done():
            break
    return history


def _val_sets(val) -> tuple[dict[str, NucleiTiles], str]:
    """{record key prefix: tiles} of the non-empty validation sets, and the record key that picks the best
    epoch."""
    if val is None:
        return {}, "val_pq"
    if isinstance(val, NucleiTiles):
        return ({"val_": val} if len(val) else {}), "val_pq"
    sets = {f"val_{name}_": tiles for name, tiles in val.items() if tiles is not None and len(tiles)}
    return sets, (f"{next(iter(sets))}pq" if sets else "val_pq")


class _Schedule:
    """Warm-up then cosine decay, over steps or, with a time budget, over the wall clock (shared CPUs make
    step times unpredictable; the budget still ends at a low learning rate)."""

    def __init__(self, lr: float, total_steps: int, budget_s: float | None):
        self.max_lr, self.total, self.budget = lr, max(total_steps, 1), budget_s
        self.steps, self.start = 0, time.monotonic()

    def fraction(self) -> float:
        f = self.steps / self.total
        if self.budget:
            f = max(f, (time.monotonic() - self.start) / self.budget)
        return min(f, 1.0)

    def lr(self) -> float:
        f = self.fraction()
        warm = min(1.0, f / 0.05)
        return self.max_lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * f)))

    def step(self) -> None:
        self.steps += 1

    def done(self) -> bool:
        return self.fraction() >= 1.0


def _write_json(path: Path, obj) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
