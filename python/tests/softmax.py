"""A small job of the built-in `softmax` workload (as "Built-in workloads" in docs/wire-format.md
describes it; the gradient is smlt.builtin's), so that Python workers can train alongside Swift
`smlt worker`s, plus a plain f32 reference of the whole BSP run to check the result against."""

import numpy as np

from smlt import Job, TrainingConfig, register_job
from smlt.blob import encode, round_to
from smlt.builtin import Partition, Settings, batch, gradient as builtin_gradient
from smlt.feedback import apply_feedback

INPUTS, CLASSES, BATCH = 8, 3, 5
WORKLOAD = {"model": "softmax", "inputs": str(INPUTS), "classes": str(CLASSES), "hidden": "4",
            "batch_size": str(BATCH), "seed": "1"}
SETTINGS = Settings.from_workload(WORKLOAD)


def dataset(examples=61, seed=3):
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 16, size=(examples, INPUTS)) / 16).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((INPUTS, CLASSES)).astype(np.float32), axis=1).astype(np.float32)
    return x, y


def partitions(workers, x, y):
    return [(x[w::workers], y[w::workers]) for w in range(workers)]


def staged_objects(workers, x, y):
    objects = {}
    for w, (px, py) in enumerate(partitions(workers, x, y)):
        objects[f"data-{workers}-{w}-x"] = encode(px, "lz4", step=0, producer=0)
        objects[f"data-{workers}-{w}-y"] = encode(py, "lz4", step=0, producer=0)
    return objects


def initial():
    return {"weight": np.zeros((INPUTS, CLASSES), np.float32), "bias": np.zeros(CLASSES, np.float32)}


def register(endpoints, job, workers, steps, x, y, chunk_elements=5, codec="lz4", lr=0.5, momentum=0.9,
             weight_decay=0.001, gradient_encoding=None, password=None, pull_encoding=None,
             checkpoint_every=0) -> Job:
    config = TrainingConfig(workers=workers, steps=steps, learning_rate=lr, momentum=momentum,
                            weight_decay=weight_decay, workload=WORKLOAD, gradient_encoding=gradient_encoding,
                            checkpoint_every=checkpoint_every)
    return register_job(endpoints, job, initial(), config, chunk_elements=chunk_elements, codec=codec,
                        objects=staged_objects(workers, x, y), password=password, pull_encoding=pull_encoding)


def gradient(params, px, py, step):
    """The softmax gradient of batch `step` of a partition (mean cross-entropy), as smlt.builtin
    computes it."""
    x, y = batch(Partition(px, py.astype(np.int64)), step, BATCH)
    return builtin_gradient(SETTINGS, params, x, y)


def reference(workers, steps, x, y, lr=0.5, momentum=0.9, weight_decay=0.001, encoding=None, chunk_elements=5,
              pulled=None):
    """The parameters after `steps` BSP steps, computed in this process (f32); with a lossy
    `encoding` (a GradientEncoding) every worker pushes with error feedback; with ``pulled`` (a
    dtype) the workers compute from the parameters rounded to it (a pull copy)."""
    params, velocity = initial(), {k: np.zeros_like(v) for k, v in initial().items()}
    parts = partitions(workers, x, y)
    inv = np.float32(1) / np.float32(workers)
    lr, momentum, weight_decay = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
    residuals = [None] * workers
    for t in range(steps):
        seen = params if pulled is None else {k: round_to(v, pulled).reshape(v.shape) for k, v in params.items()}
        grads = [gradient(seen, px, py, t).gradients for px, py in parts]
        if encoding is not None:
            for w, g in enumerate(grads):
                names = list(g)
                flat = np.concatenate([g[k].reshape(-1) for k in names])
                sent, residuals[w] = apply_feedback(flat, residuals[w], encoding, chunk_elements)
                offsets = np.cumsum([0] + [g[k].size for k in names])
                grads[w] = {k: sent[offsets[i]:offsets[i + 1]].reshape(g[k].shape) for i, k in enumerate(names)}
        for k in params:
            total = grads[0][k].copy()
            for g in grads[1:]:
                total = total + g[k]
            g = total * inv + weight_decay * params[k]
            velocity[k] = momentum * velocity[k] + g
            params[k] = params[k] - lr * velocity[k]
    return params
