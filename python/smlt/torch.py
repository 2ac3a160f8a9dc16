"""Train a ``torch.nn.Module`` through SMLT (needs PyTorch; ``import smlt`` does not import it).

The job's tensors are the module's ``named_parameters()``, in that order and under those names.
The low-level pieces work with any loop: :func:`describe` (the tensors, as numpy arrays),
:func:`register` (a job from a module), :func:`check_layout`, :func:`pull` (parameters into the
module, in place) and :func:`gradients` (the ``.grad`` of every parameter, zeros where None).
:func:`main` is a whole worker function for ``smlt train --model function``: it runs the describe,
train and evaluate phases of the event, on the data ``smlt train`` stages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("smlt.torch needs PyTorch: pip install 'smlt[torch]' (the CPU build)") from e

from .builtin import batch, partition_source
from .client import Job, SMLTError, register_job
from .layout import Layout, TrainingConfig
from .worker import FunctionEvent, StepResult, Worker, main as run_function

__all__ = ["ModelMismatch", "describe", "register", "check_layout", "pull", "gradients", "step_seed",
           "evaluate", "main"]

Model = torch.nn.Module
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ModelMismatch(SMLTError):
    """A module whose parameters are not the job's tensors (names, shapes, dtype or order)."""


def _shape(p: torch.Tensor) -> tuple[int, ...]:
    # A 0-dim parameter is the job's tensor of shape [1] (job tensors have at least one dimension).
    return tuple(p.shape) if p.dim() else (1,)


def describe(module: Model) -> dict[str, np.ndarray]:
    """The module's parameters as the job's tensors: name to a float32 copy, in
    ``named_parameters()`` order. Raises :class:`ModelMismatch` for a parameter that is not float32."""
    out = {}
    for name, p in module.named_parameters():
        if p.dtype != torch.float32:
            raise ModelMismatch(f"parameter {name!r} is {p.dtype}; SMLT trains float32 parameters")
        out[name] = p.detach().cpu().numpy().astype(np.float32, copy=True).reshape(_shape(p))
    if not out:
        raise ModelMismatch(f"{type(module).__name__} has no parameters")
    return out


def register(endpoints: list[str], job: str, module: Model, config: TrainingConfig, **kwargs) -> Job:
    """Register a job whose tensors and version 0 are the module's parameters (see
    :func:`smlt.client.register_job` for ``kwargs``); returns the open job."""
    return register_job(endpoints, job, describe(module), config, **kwargs)


def check_layout(module: Model, layout: Layout) -> None:
    """Raise :class:`ModelMismatch` unless the module's parameters are the layout's tensors."""
    have = [(name, _shape(p)) for name, p in module.named_parameters()]
    want = [(t.name, tuple(t.shape)) for t in layout.tensors]
    if have != want:
        raise ModelMismatch(f"the module's parameters {have} are not the job's tensors {want}")


def pull(module: Model, params: Mapping[str, np.ndarray]) -> None:
    """Copy ``params`` (name to array, e.g. a worker's pull) into the module's parameters, in place."""
    named = dict(module.named_parameters())
    if set(named) != set(params):
        raise ModelMismatch(f"parameters {sorted(params)} do not match the module's {sorted(named)}")
    with torch.no_grad():
        for name, p in named.items():
            value = np.asarray(params[name], dtype=np.float32)
            if value.size != p.numel():
                raise ModelMismatch(f"parameter {name!r} has {p.numel()} elements, the value {value.size}")
            p.copy_(torch.from_numpy(value.reshape(p.shape)))


def gradients(module: Model) -> dict[str, np.ndarray]:
    """Every parameter's ``.grad`` as float32 (zeros where it is None), in the job's shapes."""
    out = {}
    for name, p in module.named_parameters():
        g = p.grad
        out[name] = (np.zeros(_shape(p), np.float32) if g is None
                     else g.detach().cpu().numpy().astype(np.float32, copy=True).reshape(_shape(p)))
    return out


def step_seed(seed: int, worker: int, step: int) -> int:
    """The torch seed of worker ``worker``'s step ``step`` (so a relaunched worker draws the same
    dropout masks and the like again): splitmix64 of the three."""
    z = (seed + 0x9E3779B97F4A7C15 * (1 + step * 4096 + worker)) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return z ^ (z >> 31)


def evaluate(module: Model, loss_fn: LossFn, x: np.ndarray, y: np.ndarray, batch_size: int = 1024,
             prefix: str = "test") -> dict[str, float]:
    """Mean loss and accuracy of the module on ``x``, ``y`` (in eval mode, without gradients):
    ``{prefix}_loss`` and ``{prefix}_accuracy``. ``loss_fn`` must return the batch's mean loss."""
    module.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            bx = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], np.float32))
            by = torch.from_numpy(np.ascontiguousarray(y[start:start + batch_size], np.int64))
            out = module(bx)
            total += float(loss_fn(out, by)) * len(by)
            correct += int((out.argmax(dim=1) == by).sum())
    n = max(len(y), 1)
    return {f"{prefix}_loss": total / n, f"{prefix}_accuracy": correct / n}


def _single_threaded(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only allowed once, before any parallel work
        pass


def main(model: Model | Callable[[], Model], loss_fn: LossFn, *, batch_size: int | None = None,
         threads: int = 1) -> None:
    """A worker function for ``smlt train --model function``: runs the event's phase and exits.

    ``model`` is a module, or a callable making one (a class, say), which is called after
    ``torch.manual_seed(event seed)`` so that ``--seed`` chooses the initial parameters. It gets
    a batch's features as float32 ``[n, features]`` (reshape inside ``forward``) and returns
    logits ``[n, classes]``; ``loss_fn(logits, labels)`` (int64 labels) returns the mean loss of
    the batch, e.g. ``torch.nn.functional.cross_entropy``.

    - describe: the module's parameters as the job's tensors and version 0;
    - train: each step pulls the parameters into the module, computes the loss of the worker's
      batch ``t`` of its staged partition (``(t·n + k) mod rows``, ``n = min(batch_size, rows)``;
      ``batch_size`` is the job's ``workload.batch_size`` unless given), and pushes the gradients;
      torch is seeded per step with :func:`step_seed`;
    - evaluate: the final parameters' :func:`evaluate` on the staged ``test-x``/``test-y``.

    Torch runs ``threads`` threads (1: many workers share the machine's cores).
    """
    _single_threaded(threads)
    built: list[Model] = []

    def module(seed: int | None) -> Model:
        if not built:
            if not isinstance(model, torch.nn.Module):
                if seed is not None:
                    torch.manual_seed(seed)
                built.append(model())
                if not isinstance(built[0], torch.nn.Module):
                    raise TypeError(f"model() returned {type(built[0]).__name__}, not a torch.nn.Module")
            else:
                built.append(model)
        return built[0]

    def describe_phase(event: FunctionEvent) -> dict[str, np.ndarray]:
        return describe(module(event.seed))

    def evaluate_phase(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        m = module(None)
        pull(m, params)
        return evaluate(m, loss_fn, x, y)

    def prepare(worker: Worker):
        event, job = worker.event, worker.job
        workload = job.config.workload
        seed = event.seed if event.seed is not None else _workload_int(workload, "seed", 0)
        m = module(seed)
        check_layout(m, job.map.layout)
        size = batch_size if batch_size is not None else _workload_int(workload, "batch_size")
        if event.dataset is not None:
            inputs, classes = event.dataset.features, event.dataset.classes
        else:
            inputs, classes = _workload_int(workload, "inputs"), _workload_int(workload, "classes")
        partition, warm = partition_source(worker, inputs, classes, os.environ.get("SMLT_FUNCTION_CACHE") or None)

        def compute(step: int, params: dict[str, np.ndarray]) -> StepResult:
            pull(m, params)
            torch.manual_seed(step_seed(seed, worker.id, step))
            x, y = batch(partition(), step, size)
            by = torch.from_numpy(y)
            m.train()
            m.zero_grad(set_to_none=True)
            out = m(torch.from_numpy(np.ascontiguousarray(x)))
            loss = loss_fn(out, by)
            loss.backward()
            correct = int((out.detach().argmax(dim=1) == by).sum())
            return StepResult(gradients(m), float(loss.detach()), correct / len(y), len(y))

        return compute, warm

    run_function(prepare=prepare, describe=describe_phase, evaluate=evaluate_phase)


def _workload_int(workload: Mapping[str, str], name: str, lo: int = 1) -> int:
    v = workload.get(name)
    if not isinstance(v, str) or not v.isdigit() or int(v) < lo:
        raise SMLTError(f"the job's workload has {name} {v!r}; expected an integer >= {lo}")
    return int(v)
