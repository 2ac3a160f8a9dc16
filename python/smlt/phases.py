"""The describe and evaluate phases of a function-defined model (``smlt train --model function``).

A describe invocation writes the model's tensors to the home shard (:func:`write_description`:
every tensor blob first, the manifest ``smlt:{JOB}:describe`` last); the driver registers the job
from them. An evaluate invocation reads the final parameters and the staged test set
(:func:`load_test_set`) and writes ``smlt:{JOB}:evaluation`` (:func:`write_evaluation`).
:func:`read_description` is the reading side (what a driver checks), for tests and Python drivers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import redis

from . import keys
from .blob import Codec, decode, encode
from .client import Job, SMLTError
from .layout import SpecError, TensorSpec, json_object

__all__ = ["DescribeError", "EvaluationError", "PhaseError", "check_description", "write_description", "read_description",
           "load_test_set", "check_evaluation", "write_evaluation", "MAX_NAME_BYTES", "MAX_DIMS"]

MAX_NAME_BYTES = 200
MAX_DIMS = 8
_EVALUATION_FIELDS = ("test_loss", "test_accuracy", "train_loss", "train_accuracy")


class PhaseError(SMLTError):
    """A function invoked for a phase it does not implement."""


class DescribeError(SpecError):
    """A described model that breaks the rules: a bad tensor name, shape or dtype."""


class EvaluationError(SpecError):
    """Evaluation metrics that break the rules: missing, unknown, not finite or out of range."""


def _check_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise DescribeError(f"tensor name {name!r} must be a non-empty string")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise DescribeError(f"tensor name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes of UTF-8")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in name) or any(0xD800 <= ord(ch) < 0xE000 for ch in name):
        raise DescribeError(f"tensor name {name!r} has a control character or is not valid UTF-8")


def check_description(tensors: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    """The specs of a model's tensors (in order), checked against the describe phase's rules:
    at least one tensor, names of 1-200 bytes of UTF-8 without control characters (unique, as
    keys of a mapping), shapes of 1-8 dimensions each >= 1, float32 values (or exactly so)."""
    if not tensors:
        raise DescribeError("a model needs at least one tensor")
    specs = []
    for name, value in tensors.items():
        _check_name(name)
        a = np.asarray(value)
        if not 1 <= a.ndim <= MAX_DIMS or 0 in a.shape:
            raise DescribeError(f"tensor {name!r} has shape {a.shape}; need 1 to {MAX_DIMS} dimensions, each >= 1")
        if a.dtype != np.float32 and not np.array_equal(a.astype(np.float32), a, equal_nan=True):
            raise DescribeError(f"tensor {name!r} of dtype {a.dtype} is not exactly representable as float32")
        if not np.isfinite(a).all():
            raise DescribeError(f"tensor {name!r} has values that are not finite")
        specs.append(TensorSpec(name, tuple(int(d) for d in a.shape)))
    return specs


def write_description(conn: redis.Redis, job: str, tensors: Mapping[str, np.ndarray],
                      codec: Codec | str = Codec.LZ4) -> list[TensorSpec]:
    """Write a describe phase's keys on the home shard ``conn``: ``describe:<i>`` for every tensor
    in order (blob step 0, producer 0), then the manifest. Returns the specs written."""
    keys.check_job_id(job)
    specs = check_description(tensors)
    pipe = conn.pipeline(transaction=False)
    for i, value in enumerate(tensors.values()):
        pipe.set(keys.describe_tensor(job, i), encode(np.asarray(value, np.float32).reshape(-1), codec, 0, 0))
    pipe.execute()
    conn.set(keys.describe(job), json.dumps({"tensors": [s.to_json() for s in specs]}))
    return specs


def read_description(conn: redis.Redis, job: str) -> dict[str, np.ndarray]:
    """The described model on the home shard ``conn``, validated as a driver does (the manifest,
    then every tensor's blob and its element count). Raises :class:`DescribeError`."""
    raw = conn.get(keys.describe(job))
    if raw is None:
        raise DescribeError(f"no {keys.describe(job)}: the describe phase did not finish")
    manifest = json_object(raw, keys.describe(job))
    entries = manifest.get("tensors")
    if not isinstance(entries, list) or not entries or not all(isinstance(t, dict) for t in entries):
        raise DescribeError(f"{keys.describe(job)}: 'tensors' must be a non-empty array of objects")
    out: dict[str, np.ndarray] = {}
    for i, t in enumerate(entries):
        name, shape = t.get("name"), t.get("shape")
        _check_name(name)
        if name in out:
            raise DescribeError(f"{keys.describe(job)}: tensor name {name!r} appears twice")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
            raise DescribeError(f"{keys.describe(job)}: tensor {name!r} has shape {shape!r}")
        blob = conn.get(keys.describe_tensor(job, i))
        if blob is None:
            raise DescribeError(f"no {keys.describe_tensor(job, i)} for tensor {i} ({name!r})")
        out[name] = decode(blob, expected_count=math.prod(shape)).values.reshape(shape)
    return out


def load_test_set(job: Job, features: int, classes: int, examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The staged test set: features ``[M, features]`` float32 and int64 labels ``[M]``, checked
    (both objects present and decoding, ``M × features`` values, labels integers in
    ``0..<classes``, and ``M == examples`` when given). Raises :class:`SpecError`."""
    blobs = [job.get_object(name) for name in ("test-x", "test-y")]
    if any(b is None for b in blobs):
        raise SpecError(f"job {job.job}: the test set (objects test-x and test-y) is not staged")
    x, y = (decode(b).values for b in blobs)
    if examples is not None and len(y) != examples:
        raise SpecError(f"job {job.job}: test-y has {len(y)} labels, the event says {examples} test examples")
    if len(x) != len(y) * features:
        raise SpecError(f"job {job.job}: test-x has {len(x)} values for {len(y)} examples of {features} features")
    if not (np.isfinite(y).all() and (y == np.floor(y)).all() and (y >= 0).all() and (y < classes).all()):
        raise SpecError(f"job {job.job}: test-y has labels outside 0..<{classes}")
    return x.reshape(len(y), features), y.astype(np.int64)


def check_evaluation(metrics: Mapping[str, float]) -> dict[str, float]:
    """The evaluation as it is written: ``test_loss`` and ``test_accuracy`` required,
    ``train_loss`` and ``train_accuracy`` optional, all finite, accuracies in [0, 1]."""
    unknown = sorted(set(metrics) - set(_EVALUATION_FIELDS))
    if unknown:
        raise EvaluationError(f"unknown evaluation fields {unknown}; allowed: {', '.join(_EVALUATION_FIELDS)}")
    out = {}
    for name in _EVALUATION_FIELDS:
        if name not in metrics:
            if name.startswith("test_"):
                raise EvaluationError(f"the evaluation needs {name!r}")
            continue
        try:
            v = float(metrics[name])
        except (TypeError, ValueError):
            raise EvaluationError(f"evaluation {name!r} is {metrics[name]!r}, not a number") from None
        if not math.isfinite(v) or (name.endswith("accuracy") and not 0 <= v <= 1):
            raise EvaluationError(f"evaluation {name!r} is {v}: must be finite"
                                  + (" and in [0, 1]" if name.endswith("accuracy") else ""))
        out[name] = v
    return out


def write_evaluation(job: Job, metrics: Mapping[str, float]) -> dict[str, float]:
    """Check ``metrics`` and write them as ``smlt:{JOB}:evaluation`` on the job's home shard."""
    checked = check_evaluation(metrics)
    job.shard(0).set(keys.evaluation(job.job), json.dumps(checked))
    return checked
