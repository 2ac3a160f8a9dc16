"""SMLT's built-in workloads (``softmax`` and ``mlp``) as a worker function in numpy.

Everything here follows "Built-in workloads" in docs/wire-format.md: the config's ``workload``
settings, the models' tensors, the staged data partitions ``data-N-w-x`` / ``data-N-w-y`` (cached
under ``SMLT_FUNCTION_CACHE`` when it is set), the batches and the exit codes. Run it as a function,
e.g. ``smlt train --function "python3 -m smlt.builtin"``; :func:`gradient` is the computation alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blob import decode
from .layout import SpecError
from .worker import StepResult, Worker, main as run_function

__all__ = ["Settings", "Partition", "tensors", "batch", "gradient", "load_partition", "partition_source", "prepare",
           "main"]

MODELS = ("softmax", "mlp")
_MAX = 1 << 20


@dataclass(frozen=True)
class Settings:
    """The config's ``workload`` of a built-in model, checked."""

    model: str
    inputs: int
    classes: int
    batch_size: int
    seed: int
    hidden: int | None = None

    @classmethod
    def from_workload(cls, workload: dict[str, str]) -> "Settings":
        def number(name: str, lo: int, hi: int) -> int:
            v = workload.get(name)
            if v is None:
                raise SpecError(f"workload: {name!r} is missing")
            if not v.isdigit() or not lo <= int(v) <= hi:
                raise SpecError(f"workload: {name!r} is {v!r}, expected an integer from {lo} to {hi}")
            return int(v)

        model = workload.get("model")
        if model not in MODELS:
            raise SpecError(f"workload: model {model!r} is not one of {', '.join(MODELS)}")
        return cls(model, number("inputs", 1, _MAX), number("classes", 2, _MAX), number("batch_size", 1, _MAX),
                   number("seed", 0, (1 << 64) - 1), number("hidden", 1, _MAX) if model == "mlp" else None)


def tensors(s: Settings) -> list[tuple[str, tuple[int, ...]]]:
    """The model's tensors, names, shapes and order."""
    if s.model == "softmax":
        return [("weight", (s.inputs, s.classes)), ("bias", (s.classes,))]
    return [("w1", (s.inputs, s.hidden)), ("b1", (s.hidden,)), ("w2", (s.hidden, s.classes)), ("b2", (s.classes,))]


@dataclass(frozen=True)
class Partition:
    """A worker's staged examples: features ``rows × inputs`` and integer labels."""

    x: np.ndarray
    y: np.ndarray


def load_partition(worker: Worker, inputs: int, classes: int, cache: str | None = None) -> tuple[Partition, bool]:
    """Worker ``worker.id``'s partition for the job's current number of workers (``inputs``
    features per example), and whether it came from ``cache`` (a warm start). Raises
    :class:`SpecError` for a partition the built-in worker refuses (missing, not decoding, empty,
    wrong size, labels outside ``0..<classes``)."""
    job, n, w = worker.job.job, worker.job.config.workers, worker.id
    names = [f"data-{n}-{w}-x", f"data-{n}-{w}-y"]
    files = [Path(cache) / f"{job}-{name}.blob" for name in names] if cache else None
    blobs, warm = None, False
    if files is not None and all(f.is_file() for f in files):
        blobs, warm = [f.read_bytes() for f in files], True
    if blobs is None:
        blobs = [worker.job.get_object(name) for name in names]
        if any(b is None for b in blobs):
            raise SpecError(f"no data partition staged for worker {w} of {n}")
        if files is not None:
            Path(cache).mkdir(mode=0o700, parents=True, exist_ok=True)
            for f, b in zip(files, blobs):
                # Under a temporary name, then renamed: a killed function leaves no torn file.
                tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
                tmp.write_bytes(b)
                tmp.chmod(0o600)
                tmp.replace(f)
    # Cached or not, the blobs are checked (checksum, sizes) before use.
    x, y = (decode(b).values for b in blobs)
    if len(y) == 0:
        raise SpecError(f"the data partition of worker {w} of {n} is empty")
    if len(x) != len(y) * inputs:
        raise SpecError(f"staged partition has {len(x)} features for {len(y)} labels of dimension {inputs}")
    if not (np.isfinite(y).all() and (y == np.floor(y)).all() and (y >= 0).all() and (y < classes).all()):
        raise SpecError(f"staged partition has labels outside 0..<{classes}")
    return Partition(x.reshape(len(y), inputs), y.astype(np.int64)), warm


def partition_source(worker: Worker, inputs: int, classes: int,
                     cache: str | None = None) -> tuple[Callable[[], Partition], bool]:
    """A getter of worker ``worker.id``'s current partition, which loads the new one after a
    change of the job's number of workers, and whether the first load was warm."""
    part, warm = load_partition(worker, inputs, classes, cache)
    current = [worker.job.config.workers, part]

    def get() -> Partition:
        n = worker.job.config.workers
        if n != current[0]:
            current[:] = [n, load_partition(worker, inputs, classes, cache)[0]]
        return current[1]

    return get, warm


def batch(p: Partition, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``step``: the examples ``(step·n + k) mod rows`` for ``k < n = min(batch_size, rows)``."""
    rows = len(p.y)
    n = min(batch_size, rows)
    idx = (step * n + np.arange(n)) % rows
    return p.x[idx], p.y[idx]


def gradient(s: Settings, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> StepResult:
    """The gradient of the mean softmax cross-entropy of the batch ``x``, ``y`` (f32), with the
    batch's mean loss and accuracy (right when the first index of the largest logit is the label)."""
    n = len(y)
    rows = np.arange(n)
    if s.model == "softmax":
        logits = x @ params["weight"] + params["bias"]
    else:
        pre = x @ params["w1"] + params["b1"]
        h = np.maximum(pre, np.float32(0))
        logits = h @ params["w2"] + params["b2"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, y]))
    correct = int((np.argmax(logits, axis=1) == y).sum())
    g = e / total
    g[rows, y] -= 1
    g = (g / np.float32(n)).astype(np.float32)
    if s.model == "softmax":
        grads = {"weight": x.T @ g, "bias": g.sum(axis=0)}
    else:
        dh = g @ params["w2"].T
        dh[pre <= 0] = 0
        grads = {"w1": x.T @ dh, "b1": dh.sum(axis=0), "w2": h.T @ g, "b2": g.sum(axis=0)}
    return StepResult({k: v.astype(np.float32, copy=False) for k, v in grads.items()}, loss, correct / n, n)


def prepare(worker: Worker):
    """For :func:`smlt.worker.main`: check the job's workload and tensors, load this worker's
    partition, and return the step computation (it reloads the partition when the number of
    workers changes) and whether the partition came from the cache."""
    cache = os.environ.get("SMLT_FUNCTION_CACHE") or None

    def settings() -> Settings:
        s = Settings.from_workload(worker.job.config.workload)
        have = [(t.name, tuple(t.shape)) for t in worker.job.map.tensors]
        if have != tensors(s):
            raise SpecError(f"the job's tensors {have} are not those of the {s.model} model {tensors(s)}")
        return s

    s = settings()
    partition, warm = partition_source(worker, s.inputs, s.classes, cache)
    current = [worker.job.map.epoch, s]

    def compute(step: int, params: dict[str, np.ndarray]) -> StepResult:
        if worker.job.map.epoch != current[0]:  # reconfigured: check the settings again
            current[:] = [worker.job.map.epoch, settings()]
        x, y = batch(partition(), step, current[1].batch_size)
        return gradient(current[1], params, x, y)

    return compute, warm


def main() -> None:
    """Run as a worker function (``python3 -m smlt.builtin``); exits 0, 75, 65 or 1."""
    run_function(prepare=prepare)


if __name__ == "__main__":
    main()
