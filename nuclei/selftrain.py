"""Self-training on real, unlabelled H&E: a teacher model's confident nuclei become training labels.

    tiles = pseudo_label_slides(teacher, ["slide.svs"], PseudoLabelConfig())
    train_tiles = mix_tiles(synthetic, tiles, share=0.3)        # then nuclei.train.train(train_tiles, ...)

The teacher sees each tile under the eight flips and 90-degree rotations (test-time augmentation); its mean
nucleus probability and HV maps give instances by the usual post-processing. An instance is kept as a label
when the mean probability over it is high, the eight views agree on its pixels, its outline is convex enough and
it does not lie in a large dark mass that the post-processing cut into pieces (keratin, mucin, folds: a teacher
trained on synthetic tiles calls them confident nuclei); the pixels of the other instances, of the uncertain probability band and of disagreement between views are marked `ignore` and carry no
loss. Confident background stays background. Types of pseudo-labelled nuclei are unknown (`UNKNOWN_TYPE`), so
the type head does not learn from them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import ndimage as ndi

from nuclei.datasets.base import NucleiTiles
from nuclei.inference import predict_maps
from nuclei.model import NucleiNet, thresholds
from nuclei.postprocess import PostprocessConfig, instances_from_maps

__all__ = [
    "PseudoLabelConfig",
    "mix_tiles",
    "mixed_share",
    "pseudo_label",
    "pseudo_label_slides",
    "pseudo_labels_from_maps",
]


@dataclass(frozen=True)
class PseudoLabelConfig:
    """What counts as confident (probabilities in [0, 1]); sizes in pixels at the model's mpp."""

    keep: float = 0.8  # an instance is a label when its mean nucleus probability is at least this
    background: float = 0.15  # pixels below this probability (and not in an instance) are background labels
    max_spread: float = 0.2  # pixels whose probability varies more than this (std over the views) are ignored
    agree: float = 0.9  # an instance is kept only if this share of its pixels has a small spread
    min_size: int = 20
    max_size: int = 1500
    min_solidity: float = (
        0.85  # area / convex hull area: nuclei are nearly convex, fragments of masses are not
    )
    max_blob: int = 3000  # instances in a connected foreground region larger than this are not kept
    margin: int = 2  # ignored ring around dropped instances (their outline is uncertain too)
    tile: int = 512  # tiles read from a slide, px at the model's mpp
    max_tiles: int = 64  # per slide, drawn at random among tissue tiles
    seed: int = 0


def _views(model: NucleiNet, image: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (8, H, W) of the eight dihedral views (mapped back), and HV (2, H, W) averaged over the four
    flips among them (rotations by 0 and 180 degrees, each with and without a left-right flip): 8 forward passes."""
    probs, hvs = [], []
    for k in range(4):
        for flip in (False, True):
            view = np.rot90(image, k)
            view = np.ascontiguousarray(view[:, ::-1] if flip else view)
            p, hv = predict_maps(model, view, device=device)
            p = p[:, ::-1] if flip else p
            probs.append(np.rot90(p, -k))
            if k % 2 == 0:
                hvs.append(_unflip_hv(hv, rot180=k == 2, flip=flip))
    return np.stack(probs), np.mean(hvs, axis=0)


def _unflip_hv(hv: np.ndarray, rot180: bool, flip: bool) -> np.ndarray:
    """HV maps (2, H, W) of a view (the image turned by 180 degrees if `rot180`, then flipped left-right if
    `flip`) in the image's frame: each mirrored axis reverses the map and the sign of its offset."""
    h, v = hv[0], hv[1]
    if flip:
        h, v = -h[:, ::-1], v[:, ::-1]
    if rot180:
        h, v = -h[::-1, ::-1], -v[::-1, ::-1]
    return np.stack([h, v])


def pseudo_labels_from_maps(probs: np.ndarray, hv: np.ndarray, config: PseudoLabelConfig | None = None,
                            postprocess: PostprocessConfig | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(instances int32, ignore bool), both (H, W), from `probs` (V, H, W): one probability map per view, already
    mapped back to the image frame, and HV maps (2, H, W)."""
    config = config or PseudoLabelConfig()
    if probs.ndim != 3 or hv.shape != (2, *probs.shape[1:]):
        raise ValueError(f"probs must be (V, H, W) and hv (2, H, W); got {probs.shape} and {hv.shape}")
    mean, spread = probs.mean(0), probs.std(0)
    post = postprocess or PostprocessConfig()
    found = instances_from_maps(mean, hv, post)
    steady = spread <= config.max_spread
    blobs, _ = ndi.label(found > 0)
    blob_area = np.bincount(blobs.ravel())
    labels = np.zeros(found.shape, np.int32)
    dropped = np.zeros(found.shape, bool)
    k = 0
    for lab, sl in enumerate(ndi.find_objects(found), start=1):
        if sl is None:
            continue
        m = found[sl] == lab
        size = int(m.sum())
        ok = (
            config.min_size <= size <= config.max_size
            and float(mean[sl][m].mean()) >= config.keep
            and float(steady[sl][m].mean()) >= config.agree
            and blob_area[blobs[sl][m][0]] <= config.max_blob
            and _solidity(m) >= config.min_solidity
        )
        if ok:
            k += 1
            labels[sl][m] = k
        else:
            dropped[sl] |= m
    if config.margin:
        dropped = ndi.binary_dilation(dropped, iterations=config.margin)
    uncertain = (mean >= config.background) | ~steady
    ignore = (dropped | uncertain) & (labels == 0)
    return labels, ignore


def _solidity(mask: np.ndarray) -> float:
    """Area over convex hull area of a 2-D mask."""
    from skimage.morphology import convex_hull_image

    return float(mask.sum()) / max(float(convex_hull_image(mask).sum()), 1.0)


@torch.no_grad()
def pseudo_label(model: NucleiNet, image: np.ndarray, config: PseudoLabelConfig | None = None,
                 device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(instances, ignore) of an (H, W, 3) uint8 image at the model's mpp (see `pseudo_labels_from_maps`), with the
    model's own post-processing thresholds (`nuclei.model.thresholds`)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    probs, hv = _views(model, image, device)
    return pseudo_labels_from_maps(probs, hv, config, thresholds(model))


def _slide_tiles(path: str | os.PathLike, mpp: float, config: PseudoLabelConfig) -> list[np.ndarray]:
    """Up to `max_tiles` tissue tiles of `tile` px at `mpp` from a slide, drawn at random (seeded)."""
    import tiling
    import wsi

    with wsi.open_slide(path) as slide:
        grid = tiling.TileGrid.from_slide(slide, size=config.tile, mpp=mpp, min_tissue=0.5)
        if len(grid) == 0:  # a slide smaller than one tile, or little tissue: take what there is
            grid = tiling.TileGrid.from_slide(slide, size=config.tile, mpp=mpp, min_tissue=0.0)
        order = np.random.default_rng(config.seed).permutation(len(grid))[: config.max_tiles]
        extent = int(round(grid.spec.extent))
        return [slide.read(tuple(int(v) for v in grid.coords[i]), (extent, extent), mpp=mpp) for i in order]


def pseudo_label_slides(model: NucleiNet, paths, config: PseudoLabelConfig | None = None,
                        device: str | torch.device = "cpu", progress: bool = False) -> NucleiTiles:  # fmt: skip
    """Pseudo-labelled tissue tiles of the slides at `paths` (anything `wsi.open_slide` reads), at the model's
    mpp; ignored pixels in `NucleiTiles.ignore`; no types (`type_map` gives `UNKNOWN_TYPE` on their nuclei)."""
    config = config or PseudoLabelConfig()
    mpp = model.config.mpp
    images = [img for p in paths for img in _slide_tiles(p, mpp, config)]
    if not images:
        raise ValueError(f"no tiles to pseudo-label in {list(paths)}")
    if progress:
        from tqdm import tqdm

        images = tqdm(images, desc="pseudo-labels", unit="tile")
    out_img, out_inst, out_ignore = [], [], []
    for img in images:
        inst, ignore = pseudo_label(model, img, config, device)
        out_img.append(img)
        out_inst.append(inst)
        out_ignore.append(ignore)
    names = ", ".join(os.path.basename(str(p)) for p in paths)
    return NucleiTiles(out_img, out_inst, None, mpp=mpp, classes=model.config.classes,
                       source=f"pseudo-labels({names})", ignore=out_ignore)  # fmt: skip


def _draws(n: int, k: int, rng: np.random.Generator) -> list[int]:
    """`k` positions in range(n): every one k // n times, then a seeded sample (without repeats) of the rest."""
    extra = sorted(rng.choice(n, size=k % n, replace=False).tolist())
    return list(range(n)) * (k // n) + extra


def mix_tiles(labelled: NucleiTiles, pseudo: NucleiTiles, share: float, classes: tuple[str, ...] | None = None,
              seed: int = 0) -> NucleiTiles:  # fmt: skip
    """One tile set drawing `share` of its samples from `pseudo` (tiles repeated by reference, not copied):
    pseudo-labels, or any second labelled set (e.g. real annotations beside synthetic tiles).

    The smaller part (relative to its share) is repeated, with a seeded sample of it for the remainder, so the
    share holds whichever part is larger; `mixed_share` gives the share reached. The mix carries `classes`
    (default: `labelled`'s, e.g. the model's); each part keeps its types when its classes are those, else its
    nuclei get `UNKNOWN_TYPE`."""
    if not 0 < share < 1:
        raise ValueError(f"share must be between 0 and 1 (exclusive), got {share}")
    for name, part in (("labelled", labelled), ("second (pseudo-labelled or real)", pseudo)):
        if not len(part):
            raise ValueError(f"the {name} tile set is empty: nothing to mix")
    if labelled.mpp and pseudo.mpp and abs(labelled.mpp - pseudo.mpp) > 1e-6:
        raise ValueError(f"labelled tiles are at {labelled.mpp} um/px, the second set at {pseudo.mpp}")
    classes = labelled.classes if classes is None else tuple(classes)
    rng = np.random.default_rng(seed)
    n_labelled, n_pseudo = _counts(len(labelled), len(pseudo), share)
    keep, idx = _draws(len(labelled), n_labelled, rng), _draws(len(pseudo), n_pseudo, rng)

    # A part whose classes are not the mix's is seen without types (`type_map`: its nuclei UNKNOWN_TYPE).
    labelled, pseudo = (p if tuple(p.classes or ()) == tuple(classes or ()) else replace(p, types=None)
                        for p in (labelled, pseudo))  # fmt: skip

    return NucleiTiles(
        images=[labelled.images[i] for i in keep] + [pseudo.images[i] for i in idx],
        instances=[labelled.instances[i] for i in keep] + [pseudo.instances[i] for i in idx],
        types=[labelled.type_map(i) for i in keep] + [pseudo.type_map(i) for i in idx],
        mpp=labelled.mpp,
        classes=classes,
        source=f"{labelled.source} ({len(keep)} samples) + {pseudo.source} ({len(idx)} samples)",
        ignore=[labelled.ignore_map(i) for i in keep] + [pseudo.ignore_map(i) for i in idx],
    )


def _counts(n_labelled: int, n_pseudo: int, share: float) -> tuple[int, int]:
    """Samples drawn from each part: every tile of the part that is smaller for its share once, the other
    repeated (or not) until the second part's share is `share`."""
    wanted = (
        share / (1 - share) * n_labelled
    )  # second-set samples that give `share` beside every labelled tile
    if wanted >= n_pseudo:
        return n_labelled, int(round(wanted))
    # The second set is the larger one: repeat the labelled part rather than drop second-set tiles.
    return max(1, int(round((1 - share) / share * n_pseudo))), n_pseudo


def mixed_share(labelled: NucleiTiles, pseudo: NucleiTiles, share: float) -> float:
    """The share of `mix_tiles(labelled, pseudo, share)`'s samples that come from `pseudo` (integer counts)."""
    n_labelled, n_pseudo = _counts(len(labelled), len(pseudo), share)
    return n_pseudo / (n_labelled + n_pseudo)
