#!/usr/bin/env python3
"""Regenerate train.libsvm and test.libsvm for the 8x8 handwritten digits data.

Source: sklearn.datasets.load_digits() (the 1797-sample copy of the UCI
"Optical Recognition of Handwritten Digits" test partition bundled with
scikit-learn). See README.md in this folder for provenance and licence.

Split: numpy.random.default_rng(0).permutation(1797); the first 1437 indices
are the training set, the last 360 the test set, each kept in permutation
order.

Usage: python3 make_split.py [OUTPUT_DIR]   (default: this script's folder)
"""
import os
import sys

import numpy as np
from sklearn.datasets import load_digits

N_SAMPLES = 1797
N_TRAIN = 1437
SEED = 0


def libsvm_line(label, row):
    parts = [str(int(label))]
    for j, v in enumerate(row):
        if v != 0:
            parts.append(f"{j + 1}:{int(v)}")
    return " ".join(parts) + "\n"


def write_libsvm(path, X, y, idx):
    # newline="" so "\n" is written as-is on every platform.
    with open(path, "w", encoding="ascii", newline="") as f:
        for i in idx:
            f.write(libsvm_line(y[i], X[i]))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)

    digits = load_digits()
    X, y = digits.data, digits.target
    assert X.shape == (N_SAMPLES, 64), X.shape
    assert y.shape == (N_SAMPLES,), y.shape
    assert np.all(X == np.round(X)) and X.min() >= 0 and X.max() <= 16
    assert set(np.unique(y).tolist()) == set(range(10))

    perm = np.random.default_rng(SEED).permutation(N_SAMPLES)
    train_idx, test_idx = perm[:N_TRAIN], perm[N_TRAIN:]

    write_libsvm(os.path.join(out_dir, "train.libsvm"), X, y, train_idx)
    write_libsvm(os.path.join(out_dir, "test.libsvm"), X, y, test_idx)
    print(f"wrote {len(train_idx)} train and {len(test_idx)} test samples to {out_dir}")


if __name__ == "__main__":
    main()
