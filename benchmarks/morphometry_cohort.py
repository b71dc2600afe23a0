"""Do the morphometry features mean what their names say? Checked on a synthetic cohort's ground truth.

    python -m benchmarks.morphometry_cohort --results R --labels C/labels.csv --slides C/slides [--features morphometry]

For tiles (tumor when >= 50% of the tile is tumor in the truth mask): the AUC of single named features for tumor
against other tissue tiles. For slides (mean over their tiles): Spearman correlation of a few named features with
the cohort's ground truth (`lymphocytes` and `mucin`, the traits behind mut_a / mut_b, and `grade` over the
cancer slides, measured on the tumor tiles only). No training: each figure is one feature against the truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from benchmarks.mil_slides import _tumor_tiles
from mil.encoders.morphometry import MORPHOMETRY_FEATURES

TILE_FEATURES = ("nuclei_per_mm2", "area_um2_mean", "area_cv", "nnd_um_mean", "nucleus_h_od_mean",
                 "chromatin_sd_mean", "white_fraction", "opening_8um_fraction", "lymphocyte_fraction")  # fmt: skip
SLIDE_CHECKS = (
    ("lymphocytes", "lymphocytes_per_mm2", "all"),
    ("lymphocytes", "lymphocyte_fraction", "all"),
    ("mucin", "mucin_like_fraction", "all"),
    ("mucin", "stroma_blueness", "all"),
    ("grade", "area_um2_mean", "tumor"),
    ("grade", "area_um2_q90", "tumor"),
    ("grade", "opening_8um_fraction", "tumor"),
    ("grade", "nuclei_per_mm2", "tumor"),
    ("grade", "area_cv", "tumor"),
    ("grade", "white_fraction", "tumor"),
    ("grade", "nnd_um_mean", "tumor"),
)


def main(argv=None) -> int:
    from tiling import PatchStore

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--slides", required=True)
    p.add_argument(
        "--features", default="morphometry", help="feature name in the stores (morphometry's columns)"
    )
    args = p.parse_args(argv)
    labels = pd.read_csv(args.labels).set_index("slide_id")
    feats, tumor, slide = [], [], []
    for store_path in sorted(Path(args.results).glob("slides/*/patches.zarr")):
        store = PatchStore.open(store_path)
        if len(store) == 0:
            continue
        sid = store_path.parent.name
        feats.append(np.asarray(store.features(args.features)[:], dtype=np.float64))
        tumor.append(_tumor_tiles(store, Path(args.slides) / f"{sid}.truth.json"))
        slide += [sid] * len(store)
    x, tumor, slide = np.concatenate(feats), np.concatenate(tumor), np.array(slide)
    names = store.features(args.features).attrs["description"].get("feature_names", MORPHOMETRY_FEATURES)
    column = {name: x[:, i] for i, name in enumerate(names)}  # as the stores name them (their config)
    print(f"{len(x)} tiles of {len(set(slide))} slides, {int(tumor.sum())} tumor tiles")
    print("tile: tumor vs other tissue tiles, AUC of one feature (> 0.5: higher on tumor)")
    for name in TILE_FEATURES:
        print(f"  {name:24s} {roc_auc_score(tumor, column[name]):.3f}")
    print("slide: Spearman rho of the slide's mean feature with the ground truth (p)")
    for truth, name, tiles in SLIDE_CHECKS:
        keep = tumor if tiles == "tumor" else np.ones(len(x), bool)
        means = pd.Series(column[name][keep]).groupby(slide[keep]).mean()
        target = labels.loc[means.index, truth]
        ok = target.notna().to_numpy()
        rho, pvalue = spearmanr(means[ok], target[ok])
        print(
            f"  {truth:12s} ~ {name:22s} ({tiles} tiles, {ok.sum()} slides) rho {rho:+.3f} (p {pvalue:.1g})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
