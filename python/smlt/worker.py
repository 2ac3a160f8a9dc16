"""The BSP worker protocol and the function runtime around it.

See "The BSP step protocol", "Functions: time limits, leases and relaunches" and "Functions: the
invocation event" in docs/wire-format.md. :class:`Worker` offers the single operations (control,
pull, two-phase push, progress, lease); :meth:`Worker.run` is the whole step loop with the time
limit, and :func:`main` the entry point of a function (it exits with the documented code).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from . import keys
from .blob import BlobError, Dtype, decode, encode
from .client import Job, SMLTError, connect
from .feedback import (GradientEncoding, apply_feedback, checkpoint_residual_name, residual_codec, residual_name,
                       residual_part_name)
from .layout import SpecError, json_object
from .phases import PhaseError, load_test_set, write_description, write_evaluation
from .tensors import flatten, join_chunks, split_chunks, unflatten

__all__ = ["FunctionEvent", "DatasetInfo", "PHASES", "StepResult", "Control", "Pulled", "PushLost", "Worker",
           "main", "run_describe", "run_evaluate", "EXIT_DONE", "EXIT_CONTINUE", "EXIT_STOP_JOB"]

EXIT_DONE, EXIT_CONTINUE, EXIT_STOP_JOB = 0, 75, 65


class PushLost(SMLTError):
    """A half-finished push of an earlier invocation whose gradient chunks are gone."""


PHASES = ("describe", "train", "evaluate")


@dataclass(frozen=True)
class DatasetInfo:
    """The event's ``dataset`` (function-defined models): the data set's sizes."""

    features: int
    classes: int
    train_examples: int
    test_examples: int

    def to_json(self) -> dict:
        return {"features": self.features, "classes": self.classes, "train_examples": self.train_examples,
                "test_examples": self.test_examples}


def _integer(obj: dict, name: str, lo: int, hi: int | None, what: str) -> int:
    v = obj.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        raise SpecError(f"{what}: {name!r} is {v!r}, expected an integer >= {lo}"
                        + (f" and <= {hi}" if hi is not None else ""))
    return v


@dataclass(frozen=True)
class FunctionEvent:
    """The invocation event (``SMLT_FUNCTION_EVENT``). ``phase``, ``seed`` and ``dataset`` come
    with function-defined models (``smlt train --model function``); an event without a phase is
    a ``train`` invocation."""

    job: str
    worker: int
    generation: int
    lease_ms: int
    redis: tuple[str, ...]
    user: str | None = None
    phase: str = "train"
    seed: int | None = None
    dataset: DatasetInfo | None = None

    @classmethod
    def from_json(cls, data: str | bytes) -> "FunctionEvent":
        what = "invocation event"
        e = json_object(data, what)
        job = e.get("job")
        try:
            keys.check_job_id(job)
        except ValueError as err:
            raise SpecError(f"{what}: {err}") from None
        endpoints = e.get("redis")
        if not isinstance(endpoints, list) or not endpoints or not all(isinstance(s, str) for s in endpoints):
            raise SpecError(f"{what}: 'redis' must be a non-empty array of endpoint strings")
        user = e.get("user")
        if user is not None and not isinstance(user, str):
            raise SpecError(f"{what}: 'user' must be a string or null")
        phase = e.get("phase", "train")
        if phase not in PHASES:
            raise SpecError(f"{what}: 'phase' is {phase!r}, expected one of {', '.join(PHASES)}")
        seed = _integer(e, "seed", 0, (1 << 64) - 1, what) if e.get("seed") is not None else None
        dataset = None
        if e.get("dataset") is not None:
            d, dw = e["dataset"], f"{what}: dataset"
            if not isinstance(d, dict):
                raise SpecError(f"{dw} must be an object")
            dataset = DatasetInfo(_integer(d, "features", 1, None, dw), _integer(d, "classes", 1, None, dw),
                                  _integer(d, "train_examples", 0, None, dw), _integer(d, "test_examples", 0, None, dw))
        return cls(job, _integer(e, "worker", 0, 4095, what), _integer(e, "generation", 0, None, what),
                   _integer(e, "lease_ms", 1, None, what), tuple(endpoints), user, phase, seed, dataset)

    @classmethod
    def from_env(cls) -> "FunctionEvent":
        data = os.environ.get("SMLT_FUNCTION_EVENT")
        if data is None:
            raise SpecError("SMLT_FUNCTION_EVENT is not set")
        return cls.from_json(data)

    def to_json(self) -> str:
        e = {"job": self.job, "worker": self.worker, "generation": self.generation, "lease_ms": self.lease_ms,
             "redis": list(self.redis), "user": self.user}
        if self.phase != "train":
            e["phase"] = self.phase
        if self.seed is not None:
            e["seed"] = self.seed
        if self.dataset is not None:
            e["dataset"] = self.dataset.to_json()
        return json.dumps(e)


@dataclass(frozen=True)
class StepResult:
    """What a step's computation returns: the gradient of every tensor and the batch's metrics."""

    gradients: Mapping[str, np.ndarray]
    loss: float
    accuracy: float
    examples: int


@dataclass(frozen=True)
class Control:
    """The job's control as read after the home shard published a step: epoch and hold."""

    epoch: int
    hold: int | None

    def holds(self, step: int) -> bool:
        return self.hold is not None and step >= self.hold


@dataclass(frozen=True)
class Pulled:
    """A pull's parameters (flat) and the oldest and newest chunk versions seen."""

    params: np.ndarray
    oldest: int
    newest: int


class Worker:
    """Worker ``event.worker`` of ``event.job``: the protocol's operations on the open job."""

    def __init__(self, event: FunctionEvent, password: str | None = None):
        self.event = event
        self._password = password
        self.job = self._open()
        self._lease_thread: threading.Thread | None = None
        self._lease_stop = threading.Event()
        self._activity = time.monotonic()

    def _open(self) -> Job:
        return Job.open(list(self.event.redis), self.event.job, self._password, self.event.user)

    @property
    def id(self) -> int:
        return self.event.worker

    @property
    def is_member(self) -> bool:
        """Whether this worker's id is below the config's ``workers``."""
        return self.id < self.job.config.workers

    def close(self) -> None:
        self.stop_lease()
        self.job.close()

    def reopen(self) -> None:
        """Reload map and config (after an epoch change)."""
        old = self.job
        self.job = self._open()
        old.close()

    # Progress ----------------------------------------------------------------------------------

    def load_progress(self) -> int:
        """The saved ``next_step`` of this worker (0 when none)."""
        return self.load_state()[0]

    def load_state(self) -> tuple[int, str | None]:
        """The saved ``next_step`` (0 when none) and the residual object it names (None: zero)."""
        raw = self.job.get_object(f"state-{self.id}")
        if raw is None:
            return 0, None
        try:
            state = json.loads(raw)
            step = state["next_step"]
        except (ValueError, KeyError, TypeError):
            raise SpecError(f"worker {self.id}'s progress {raw!r} is not {{\"next_step\": int, ...}}") from None
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise SpecError(f"worker {self.id}'s progress has next_step {step!r}")
        residual = state.get("residual") if isinstance(state, dict) else None
        if residual is not None and not isinstance(residual, str):
            raise SpecError(f"worker {self.id}'s progress has residual {residual!r}")
        return step, residual

    def save_progress(self, next_step: int, residual: str | None = None) -> None:
        state = {"next_step": next_step, "generation": self.event.generation}
        if residual is not None:
            state["residual"] = residual
        self.job.set_object(f"state-{self.id}", json.dumps(state))

    @property
    def encoding(self) -> GradientEncoding:
        """How this job's gradients are pushed (the config's ``gradient_encoding``)."""
        return self.job.config.encoding(self.job.map.codec)

    def load_residual(self, name: str, step: int) -> np.ndarray:
        """The error-feedback residual ``name`` (all its parts), which must be this worker's for
        ``step``; raises :class:`SMLTError` when a part is missing or not that (the worker cannot
        resume exactly)."""
        if name != residual_name(self.id, step):
            raise SMLTError(f"worker {self.id}'s progress names residual {name!r} for step {step}")
        layout = self.job.map.layout
        residual = np.zeros(layout.total, dtype=np.float32)
        for part in range(layout.num_chunks):
            part_name = residual_part_name(name, part)
            r = layout.chunk_range(part)
            raw = self.job.get_object(part_name)
            if raw is None:
                raise SMLTError(f"part {part_name!r} of the error-feedback residual of worker {self.id} for step "
                                f"{step} is missing")
            try:
                b = decode(raw)
            except BlobError as e:
                raise SMLTError(f"part {part_name!r} of the error-feedback residual is not a valid blob: {e}") from e
            if (b.header.dtype, b.header.step, b.header.producer, b.values.size) != (Dtype.F32, step, self.id, len(r)):
                raise SMLTError(f"part {part_name!r} of the error-feedback residual holds {b.values.size} "
                                f"{b.header.dtype.wire_name} values of step {b.header.step} from producer "
                                f"{b.header.producer}; worker {self.id} needs {len(r)} f32 values of step {step}")
            residual[r.start:r.stop] = b.values
        return residual

    # Lease -------------------------------------------------------------------------------------

    def touch(self) -> None:
        """Record progress of the step loop (a worker without progress stops renewing its lease)."""
        self._activity = time.monotonic()

    def start_lease(self) -> None:
        """Set the lease and renew it every ``lease_ms / 3`` on a connection of its own."""
        key, ms = keys.lease(self.job.job, self.id), self.event.lease_ms
        conn = self.job.new_connection(0)
        conn.set(key, str(self.event.generation), px=ms)
        hang = max(60.0, 20 * ms / 1000)
        self._lease_stop.clear()

        def renew():
            try:
                while not self._lease_stop.wait(ms / 3000):
                    if time.monotonic() - self._activity > hang:
                        return  # hung: let the lease expire
                    try:
                        conn.set(key, str(self.event.generation), px=ms)
                    except Exception as e:  # keep trying; a lost lease gets this worker relaunched
                        print(f"worker {self.id}: lease renewal failed: {e}", file=sys.stderr)
            finally:
                conn.close()

        self._lease_thread = threading.Thread(target=renew, name=f"smlt-lease-{self.id}", daemon=True)
        self._lease_thread.start()

    def stop_lease(self) -> None:
        """Stop renewing (the lease is never deleted; it expires)."""
        if self._lease_thread is not None:
            self._lease_stop.set()
            self._lease_thread.join()
            self._lease_thread = None

    def report_start(self, seconds: float, warm: bool = False) -> None:
        home = self.job.shard(0)
        key = keys.starts(self.job.job)
        home.rpush(key, json.dumps({"worker": self.id, "generation": self.event.generation,
                                    "warm": warm, "seconds": seconds}))
        home.ltrim(key, -10000, -1)

    # Steps -------------------------------------------------------------------------------------

    def _xread_after(self, shard: int, step: int, wait_s: float) -> bool:
        """Block until shard ``shard`` published version ``step`` or later; False on timeout."""
        conn, key = self.job.shard(shard), keys.versions(self.job.job, shard)
        end = time.monotonic() + wait_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            if conn.xread({key: f"{step}-0"}, count=1, block=max(1, int(min(left, 5.0) * 1000))):
                return True

    def control(self, step: int, wait_s: float) -> Control | None:
        """Step 0: wait for the home shard's version ``step``, then read hold and epoch."""
        if not self._xread_after(0, step, wait_s):
            return None
        hold, epoch = self.job.shard(0).mget(keys.hold(self.job.job), keys.epoch_key(self.job.job))
        if epoch is None or not epoch.isdigit():
            raise SMLTError(f"job {self.job.job}: epoch key is {epoch!r}")
        return Control(int(epoch), int(hold) if hold is not None and hold.isdigit() else None)

    def pull(self, step: int, wait_s: float) -> Pulled | None:
        """Step 1: every chunk at version ``step`` or newer (None if a shard did not publish in time)."""
        end = time.monotonic() + wait_s
        m, layout = self.job.map, self.job.map.layout
        chunks: list = [None] * layout.num_chunks
        versions = []
        for i in range(len(m.shards)):
            if not self._xread_after(i, step, end - time.monotonic()):
                return None
            mine = m.chunks_of(i)
            pipe = self.job.shard(i).pipeline(transaction=False)
            pulled = m.pulled_key  # the pull copy when the job keeps one
            for c in mine:
                pipe.get(pulled(m.job, c))
            for c, raw in zip(mine, pipe.execute()):
                if raw is None:
                    raise SMLTError(f"job {m.job}: chunk {c} has no {pulled(m.job, c)} after version {step} was "
                                    "published")
                b = decode(raw, expected_count=len(layout.chunk_range(c)))
                if b.header.step < step:
                    raise SMLTError(f"job {m.job}: chunk {c} is at version {b.header.step} after {step} was published")
                chunks[c] = b.values
                versions.append(b.header.step)
        return Pulled(join_chunks(chunks, layout), min(versions, default=step), max(versions, default=step))

    def push(self, gradient: np.ndarray, step: int, residual: np.ndarray | None = None) -> str | None:
        """Step 3: the two-phase push of a flat gradient with the job's gradient encoding (the
        values as they are for f32; rounded to bf16 or f16). ``residual`` (the next step's
        error-feedback residual) is stored in the first phase; returns its object name."""
        name = self._store(gradient, step, residual)
        for i in range(len(self.job.map.shards)):
            self._announce(i, step)
        return name

    def _store(self, gradient: np.ndarray, step: int, residual: np.ndarray | None = None) -> str | None:
        """Phase one of a push: every gradient chunk stored on its shard (and the residual)."""
        m = self.job.map
        encoding = self.encoding
        chunks = split_chunks(gradient, m.layout)
        name = None if residual is None else residual_name(self.id, step + 1)
        # At a checkpoint version the residual also goes to that version's copy.
        every = self.job.config.checkpoint_every
        names = [] if name is None else [name] + (
            [checkpoint_residual_name(self.id, step + 1, every)] if every > 0 and (step + 1) % every == 0 else [])
        for i in range(len(m.shards)):
            pipe = self.job.shard(i).pipeline(transaction=False)
            for c in m.chunks_of(i):
                pipe.set(keys.grad(m.job, c, step, self.id),
                         encode(chunks[c], encoding.codec, step, self.id, dtype=encoding.dtype), ex=3600)
            if names:
                for part, values in enumerate(split_chunks(residual, m.layout)):
                    blob = None
                    for part_name in (residual_part_name(n, part) for n in names):
                        if self.job.object_shard(part_name) == i:
                            blob = blob or encode(values, residual_codec(encoding), step + 1, self.id)
                            pipe.set(keys.obj(m.job, part_name), blob)
            pipe.execute()
        return name

    def _announce(self, shard: int, step: int) -> None:
        """Phase two of a push on one shard: count it and wake the shard's server."""
        job = self.job.job
        pipe = self.job.shard(shard).pipeline(transaction=False)
        pipe.sadd(keys.pushed(job, shard, step), str(self.id))
        pipe.expire(keys.pushed(job, shard, step), 3600)
        pipe.rpush(keys.inbox(job, shard), f"{step}:{self.id}")
        pipe.ltrim(keys.inbox(job, shard), -1000, -1)
        pipe.execute()

    def push_again_if_refused(self, gradient: np.ndarray, step: int) -> bool:
        """Push ``gradient`` of ``step`` again if a shard refused it: the shard is still at version
        ``step`` and this worker is not in its pushed set (its server found the gradient missing
        or damaged in Redis). Returns whether it pushed. Without it the step never completes."""
        job = self.job.job
        refused = False
        for i in range(len(self.job.map.shards)):
            pipe = self.job.shard(i).pipeline(transaction=True)  # one MULTI: no commit in between
            pipe.xrevrange(keys.versions(job, i), count=1)
            pipe.sismember(keys.pushed(job, i, step), str(self.id))
            entries, member = pipe.execute()
            at = int(entries[0][1][b"version"]) if entries else None
            refused = refused or (at == step and not member)
        if refused:
            self.push(gradient, step)
        return refused

    def complete_push(self, step: int) -> None:
        """Finish an earlier invocation's push of ``step`` on the shards still at ``step``.

        Raises :class:`PushLost` if such a shard lacks one of this worker's gradient chunks.
        """
        m = self.job.map
        behind = [i for i in range(len(m.shards)) if self.job.version(i) == step]
        for i in behind:
            mine = m.chunks_of(i)
            if mine and self.job.shard(i).exists(*[keys.grad(m.job, c, step, self.id) for c in mine]) != len(mine):
                raise PushLost(f"step {step} was half pushed and its gradient is gone from Redis "
                               f"(shard {m.shards[i]})")
        for i in behind:
            self._announce(i, step)

    def report(self, step: int, result: StepResult, **seconds: float) -> None:
        """Step 4: the step's metrics (``seconds`` may give pull_s, compute_s, push_s, step_s)."""
        entry = {"worker": self.id, "step": step, "loss": float(result.loss), "accuracy": float(result.accuracy),
                 "examples": int(result.examples), **{k: float(v) for k, v in seconds.items()}}
        self.job.shard(0).xadd(keys.metrics(self.job.job), {"m": json.dumps(entry)}, maxlen=10000, approximate=True)

    def report_failure(self, reason: str) -> None:
        self.job.shard(0).set(keys.failure(self.job.job), json.dumps({"worker": str(self.id), "reason": reason}),
                              ex=86400)

    # The loop ----------------------------------------------------------------------------------

    def run(self, compute: Callable[[int, dict[str, np.ndarray]], StepResult],
            timeout_ms: int | None = None, invoked_at_ns: int | None = None, warm: bool = False) -> int:
        """Run this worker's steps; returns the exit code (0 done, 75 continue, 65 stop the job).

        ``compute(step, params)`` gets the named parameters of version ``step`` and returns a
        :class:`StepResult`. Without ``timeout_ms`` there is no deadline; ``invoked_at_ns`` is
        ``CLOCK_MONOTONIC`` at the platform's start (default: now). ``warm`` is reported with the
        start: the function found what it needs in its local cache.
        """
        started = time.monotonic_ns()
        origin = invoked_at_ns if invoked_at_ns is not None else started
        deadline = None if timeout_ms is None else (origin + timeout_ms * 1_000_000) / 1e9
        reserve = 0.0 if timeout_ms is None else min(0.4, timeout_ms / 5000)
        if not self.is_member:
            return EXIT_DONE
        step, residual_object = self.load_state()
        residual = None if residual_object is None else self.load_residual(residual_object, step)
        self.touch()
        self.start_lease()
        try:
            self.report_start((time.monotonic_ns() - origin) / 1e9, warm)
            slowest, done = 0.0, 0
            # This invocation's last push, kept until the next step's parameters arrive: a server
            # that refuses it (gradient missing or damaged in Redis) waits for it again.
            last_push: tuple[int, np.ndarray] | None = None

            def push_again_if_refused() -> None:
                if last_push is not None and last_push[0] == step - 1:
                    if self.push_again_if_refused(last_push[1], last_push[0]):
                        print(f"worker {self.id}: a server refused this worker's push of step {last_push[0]}; "
                              "pushed it again", file=sys.stderr)

            def budget() -> float | None:
                if deadline is None:
                    return 600.0
                left = deadline - time.monotonic() - reserve
                if left <= 0 or (done > 0 and left < 2 * slowest):
                    return None
                return max(left - slowest, 0.01)

            def stopping(next_step: int) -> int:
                self.save_progress(next_step, residual_object)
                return EXIT_CONTINUE

            while step < self.job.config.steps:
                t0 = time.monotonic()
                self.touch()
                wait = budget()
                if wait is None:
                    return stopping(step)
                control = self.control(step, min(wait, 5.0))
                if control is None:
                    push_again_if_refused()
                    if deadline is not None and budget() is None:
                        return stopping(step)
                    continue
                if control.epoch != self.job.map.epoch:
                    self.reopen()
                    if not self.is_member:
                        return EXIT_DONE
                    continue
                if control.holds(step):
                    time.sleep(0.001)
                    continue
                wait = budget()
                if wait is None:
                    return stopping(step)
                t_pull = time.monotonic()
                pulled = self.pull(step, min(wait, 5.0))  # in rounds, to notice a refused push
                if pulled is None:
                    push_again_if_refused()
                    if deadline is not None and budget() is None:
                        return stopping(step)
                    continue
                if pulled.newest > step:
                    # An earlier invocation pushed this step: finish that push, then go on at
                    # step + 1 (saved first, so no invocation starts two steps behind its push).
                    # Not the newest version: chunks at step + 2 mean step + 1 was pushed too,
                    # perhaps only in part, and the next pull finishes it the same way.
                    self.complete_push(step)
                    step += 1
                    if self.encoding.lossy:  # that push stored the residual of step + 1 first
                        residual_object = residual_name(self.id, step)
                        residual = self.load_residual(residual_object, step)
                    self.save_progress(step, residual_object)
                    continue
                t_compute = time.monotonic()
                result = compute(step, unflatten(pulled.params, self.job.map.layout))
                self.touch()
                gradient = flatten(result.gradients, self.job.map.layout)
                if not math.isfinite(result.loss) or not np.isfinite(gradient).all():
                    what = "gradient is not finite" if math.isfinite(result.loss) else f"loss is {result.loss}"
                    self.report_failure(f"training diverged at step {step}: the {what}")
                    return EXIT_STOP_JOB
                t_push = time.monotonic()
                encoding = self.encoding
                sent, next_residual = apply_feedback(gradient, residual, encoding, self.job.map.chunk_elements)
                if encoding.lossy and not np.isfinite(sent).all():
                    self.report_failure(f"step {step}: the gradient encoded as {encoding.spec} (plus the "
                                        f"error-feedback residual) has a value outside {encoding.dtype.wire_name}'s "
                                        "range; use another --codec or a lower learning rate (--lr)")
                    return EXIT_STOP_JOB
                stored = self.push(sent, step, next_residual)
                last_push = (step, sent)
                residual, residual_object = next_residual, stored
                t_end = time.monotonic()
                self.report(step, result, pull_s=t_compute - t_pull, compute_s=t_push - t_compute,
                            push_s=t_end - t_push, step_s=t_end - t0)
                step += 1
                done += 1
                self.save_progress(step, residual_object)
                slowest = max(slowest, time.monotonic() - t0)
            return EXIT_DONE
        finally:
            self.stop_lease()


Compute = Callable[[int, dict[str, np.ndarray]], StepResult]
#: ``describe(event)``: the model's initial tensors, name to array, in model order.
Describe = Callable[[FunctionEvent], Mapping[str, np.ndarray]]
#: ``evaluate(params, x, y)``: metrics of the final parameters on the test set (``x`` float32
#: ``[M, features]``, ``y`` int64 ``[M]``): ``test_loss``, ``test_accuracy`` and optionally
#: ``train_loss``, ``train_accuracy``.
Evaluate = Callable[[dict[str, np.ndarray], np.ndarray, np.ndarray], Mapping[str, float]]


def run_describe(event: FunctionEvent, describe: Describe, password: str | None = None) -> int:
    """The describe phase: write ``describe(event)``'s tensors to the home shard; returns 0."""
    conn = connect(event.redis[0], password, event.user)
    try:
        write_description(conn, event.job, describe(event))
    finally:
        conn.close()
    return EXIT_DONE


def run_evaluate(event: FunctionEvent, evaluate: Evaluate, password: str | None = None) -> int:
    """The evaluate phase: read the newest parameters and the staged test set, write
    ``evaluate(params, x, y)`` as the job's evaluation; returns 0."""
    if event.dataset is None:
        raise SpecError("invocation event: an evaluate phase needs 'dataset'")
    with Job.open(list(event.redis), event.job, password, event.user) as job:
        _, params = job.read_parameters()
        d = event.dataset
        x, y = load_test_set(job, d.features, d.classes, d.test_examples)
        write_evaluation(job, evaluate(params, x, y))
    return EXIT_DONE


def main(compute: Compute | None = None, *,
         prepare: Callable[[Worker], tuple[Compute, bool]] | None = None,
         describe: Describe | None = None, evaluate: Evaluate | None = None) -> None:
    """A function's entry point: read the event and limits from the environment, run the event's
    phase, and exit with the documented code (1 for an error, to be relaunched).

    Give either ``compute`` or ``prepare`` for the train phase: ``prepare(worker)`` is called once
    the job is open and only for a member of it, before the steps (to load data, say); it returns
    ``(compute, warm)``, ``warm`` telling whether it found what it needed in the function's cache.
    A function-defined model also gives ``describe`` and ``evaluate`` (see :data:`Describe` and
    :data:`Evaluate`); a phase without its callable exits 1 with a :class:`PhaseError`.
    """
    if (compute is None) == (prepare is None):
        raise TypeError("main() takes either compute or prepare")
    try:
        event = FunctionEvent.from_env()
        password = os.environ.get("SMLT_REDIS_PASSWORD")
        if event.phase != "train":
            given = describe if event.phase == "describe" else evaluate
            if given is None:
                raise PhaseError(f"invoked for the {event.phase} phase, but this function has none "
                                 f"(main() got no {event.phase}=)")
            run = run_describe if event.phase == "describe" else run_evaluate
            _exit(run(event, given, password))
        timeout = os.environ.get("SMLT_FUNCTION_TIMEOUT_MS")
        invoked = os.environ.get("SMLT_FUNCTION_INVOKED_AT_NS")
        worker = Worker(event, password)
        try:
            warm = False
            if prepare is not None:
                if not worker.is_member:
                    _exit(EXIT_DONE)
                compute, warm = prepare(worker)
            code = worker.run(compute, int(timeout) if timeout else None, int(invoked) if invoked else None,
                              warm)
        finally:
            worker.close()
    except Exception as e:
        print(f"smlt worker: {type(e).__name__}: {e}", file=sys.stderr)
        _exit(1)
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Ends the invocation at once with ``code``. The work is in Redis and the lease is no longer
    renewed, so the interpreter's teardown (seconds with PyTorch loaded, on a busy machine) must
    not keep the process alive: a scheduler would find it running without a lease and kill it as
    frozen."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
