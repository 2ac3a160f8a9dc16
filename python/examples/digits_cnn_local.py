"""The BSP run of digits_cnn.py in one process, without SMLT (to choose the flags quickly): W
workers' partitions (example i to worker i mod W), batch t of each ((t·n + k) mod rows), the sum
of their gradients in worker order, and the servers' f32 update (g = sum·(1/W); v = momentum·v + g;
p = p − lr·v), then the test accuracy and the param_digest that `smlt train --json` reports for
the same flags (they are equal: SMLT computes exactly this).

    python3 python/examples/digits_cnn_local.py --epochs 10 --lr 0.1 --momentum 0.9 [--workers 4 --seed 1]
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from digits_cnn import DigitsCNN
from smlt.layout import fnv1a64

DATA = Path(__file__).resolve().parents[2] / "data" / "digits"


def load(name):
    xs, ys = [], []
    for line in (DATA / name).read_text().splitlines():
        label, *pairs = line.split()
        x = np.zeros(64, np.float32)
        for p in pairs:
            i, v = p.split(":")
            x[int(i) - 1] = np.float32(v) / np.float32(16)
        xs.append(x)
        ys.append(int(label))
    return np.stack(xs), np.array(ys, np.int64)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--workers", type=int, default=4)
    a.add_argument("--epochs", type=float, default=30)
    a.add_argument("--batch-size", type=int, default=16)
    a.add_argument("--lr", type=float, default=0.05)
    a.add_argument("--momentum", type=float, default=0.9)
    a.add_argument("--seed", type=int, default=1)
    o = a.parse_args()
    torch.set_num_threads(1)
    x, y = load("train.libsvm")
    tx, ty = load("test.libsvm")
    parts = [(x[w::o.workers], y[w::o.workers]) for w in range(o.workers)]
    steps = max(1, math.ceil(o.epochs * math.ceil(len(y) / o.workers) / o.batch_size))
    torch.manual_seed(o.seed)
    model = DigitsCNN()
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    lr, momentum = (torch.tensor(v, dtype=torch.float32) for v in (o.lr, o.momentum))
    start = time.time()
    for t in range(steps):
        total = [torch.zeros_like(p) for p in params]
        for px, py in parts:
            n = min(o.batch_size, len(py))
            idx = (t * n + np.arange(n)) % len(py)
            model.zero_grad()
            F.cross_entropy(model(torch.from_numpy(px[idx])), torch.from_numpy(py[idx])).backward()
            total = [s + p.grad for s, p in zip(total, params)]
        with torch.no_grad():
            for p, v, s in zip(params, velocity, total):
                v.copy_(momentum * v + s * (1 / o.workers))
                p.copy_(p - lr * v)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(tx))
        loss = float(F.cross_entropy(out, torch.from_numpy(ty)))
        acc = float((out.argmax(1) == torch.from_numpy(ty)).float().mean())
    flat = np.concatenate([p.detach().numpy().reshape(-1) for p in params]).astype("<f4")
    print(f"steps {steps}  test_loss {loss:.4f}  test_accuracy {acc:.4f}  param_digest {fnv1a64(flat.tobytes()):016x}"
          f"  ({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
