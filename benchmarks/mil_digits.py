"""Digits-bags (Ilse et al. 2018's MNIST-bags protocol rebuilt from scikit-learn's bundled 8x8 digits).

Bag sizes are drawn from a normal of mean 10 and sd 2 (at least 2 tiles); a bag is positive when it holds a 9.
Instances are the 64 pixel values scaled to [0, 1]. Training bags draw from one half of the digits, test bags
from the other half. 200 training bags, of which 40 are held out for early stopping (so 160 train), and 1,000
test bags; every registered model, 5 seeds each. Models take two Linear+ReLU tile layers (`encoder_layers=2`;
TransMIL its own single layer, 256 wide like the others' tile embeddings rather than its paper's 512, which on
64 features only quadruples its parameters and its time); Ilse et al. used a LeNet on 28x28 MNIST and report
0.970 AUC at 200 bags.

    python -m benchmarks.mil_digits --seeds 5
    python -m benchmarks.mil_digits --models transmil --seed-list 0 1   # some seeds (run several at once)
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

import mil


def digits_bags(n_bags: int, seed: int, part: str = "train", mean_size: int = 10, sd_size: int = 2,
                target: int = 9):  # fmt: skip
    """`n_bags` bags of 8x8 digit images (64 features), label 1 when a bag holds `target`.

    Tiles are drawn uniformly, as in Ilse et al.'s code, so about two bags in three are positive. `part` picks
    one of two fixed halves of the 1,797 digits, so training and test bags never share an image.
    """
    digits = load_digits()
    x, y = digits.data.astype(np.float32) / 16.0, digits.target
    half = np.random.default_rng(12345).permutation(len(y))
    rows = half[: len(y) // 2] if part == "train" else half[len(y) // 2 :]
    x, y = x[rows], y[rows]
    rng = np.random.default_rng(seed)
    bags, labels = [], []
    for _ in range(n_bags):
        size = max(2, int(round(rng.normal(mean_size, sd_size))))
        index = rng.choice(len(y), size)
        bags.append(x[index])
        labels.append(int((y[index] == target).any()))
    return bags, np.asarray(labels)


def run(
    model_name: str, seed: int, epochs: int, n_train: int = 200, n_test: int = 1000, n_val: int = 40
) -> float:
    """Test AUC of one model trained on `n_train` - `n_val` bags, early-stopped on the other `n_val`."""
    torch.manual_seed(seed)
    bags, labels = digits_bags(n_train, seed, "train")
    train, val = (bags[n_val:], labels[n_val:]), (bags[:n_val], labels[:n_val])
    test = digits_bags(n_test, seed + 2000, "test")
    task = mil.create_task("binary")
    kwargs = {"embed_dim": 256} if model_name == "transmil" else {"encoder_layers": 2}
    model = mil.create_model(model_name, 64, 1, **kwargs)
    config = mil.FitConfig(epochs=epochs, patience=20, lr=1e-3, weight_decay=1e-4, batch_size=4, seed=seed,
                           progress=False)  # fmt: skip
    mil.fit(model, task, train, val, config)
    probability = task.predict(mil.predict_logits(model, test, "cpu"))
    return float(roc_auc_score(test[1], probability))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--seed-list", type=int, nargs="*", default=None, help="these seeds instead of 0..seeds-1"
    )
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| model | test AUC, mean +/- sd over seeds | per seed | seconds per run |")
    print("| --- | --- | --- | --- |")
    for name in args.models or mil.list_models():
        aucs, start = [], time.perf_counter()
        seeds = args.seed_list if args.seed_list is not None else range(args.seeds)
        for seed in seeds:
            aucs.append(run(name, seed, args.epochs))
            print(f"  {name} seed {seed}: {aucs[-1]:.4f}", file=sys.stderr, flush=True)
        seconds = (time.perf_counter() - start) / len(aucs)
        per_seed = ", ".join(f"{a:.3f}" for a in aucs)
        print(f"| {name} | {np.mean(aucs):.3f} +/- {np.std(aucs, ddof=1) if len(aucs) > 1 else 0.0:.3f} | {per_seed} | {seconds:.1f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
