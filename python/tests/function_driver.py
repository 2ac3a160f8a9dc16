"""What `smlt train --model function` does as a driver (the describe and evaluate phases of
/work/shared-tmp/phases.md around the BSP steps), simulated in Python so that function files can be
tested before and besides the Swift driver: invoke the function's describe phase, register the job
from the described tensors with the partitions and the test set staged, run the workers, invoke
the evaluate phase."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from smlt import FunctionEvent, TrainingConfig, keys, register_job
from smlt.blob import encode
from smlt.client import connect
from smlt.phases import read_description
from smlt.worker import DatasetInfo


def invoke(procs, command, ev, timeout=120, **env):
    """Run `command` (an argv list) as one invocation with event `ev`; returns (exit code, stderr)."""
    proc = procs.start(command, "pyfunction", env={**os.environ, "SMLT_FUNCTION_EVENT": ev.to_json(), **env},
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def event(endpoints, job, phase, seed, info, worker=0):
    return FunctionEvent(job, worker, 0, 3000, tuple(endpoints), None, phase, seed, info)


def describe(procs, command, endpoints, job, seed, info):
    """The describe phase: the tensors it wrote (validated), and its keys deleted as the driver does."""
    code, err = invoke(procs, command, event(endpoints, job, "describe", seed, info))
    assert code == 0, err
    home = connect(endpoints[0])
    try:
        tensors = read_description(home, job)
        home.delete(keys.describe(job), *[keys.describe_tensor(job, i) for i in range(len(tensors))])
    finally:
        home.close()
    return tensors


def stage(workers, x, y, tx, ty):
    """The named objects the driver stages: each worker's partition and the test set."""
    blob = lambda a: encode(np.ascontiguousarray(a, np.float32).reshape(-1), "lz4", step=0, producer=0)
    objects = {}
    for w in range(workers):
        objects[f"data-{workers}-{w}-x"], objects[f"data-{workers}-{w}-y"] = blob(x[w::workers]), blob(y[w::workers])
    objects["test-x"], objects["test-y"] = blob(tx), blob(ty)
    return objects


def train(procs, command, endpoints, job, x, y, tx, ty, *, workers, steps, lr, momentum=0.9, batch_size=16,
          seed=1, timeout=300):
    """The whole run: describe, register, the workers' train invocations (all exit 0), evaluate.
    Returns (final parameters, evaluation)."""
    info = DatasetInfo(x.shape[1], int(max(y.max(), ty.max())) + 1, len(y), len(ty))
    tensors = describe(procs, command, endpoints, job, seed, info)
    workload = {"model": "function", "inputs": str(info.features), "classes": str(info.classes), "hidden": "64",
                "batch_size": str(batch_size), "seed": str(seed)}
    config = TrainingConfig(workers=workers, steps=steps, learning_rate=lr, momentum=momentum, weight_decay=0.0,
                            workload=workload)
    with register_job(endpoints, job, tensors, config, chunk_elements=1000, codec="lz4",
                      objects=stage(workers, x, y, tx, ty)) as handle:
        running = [procs.start(command, "pyfunction", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "SMLT_FUNCTION_EVENT":
                                    event(endpoints, job, "train", seed, info, w).to_json()})
                   for w in range(workers)]
        for proc in running:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            assert proc.returncode == 0, err
        handle.wait_version(steps, timeout=30)
        code, err = invoke(procs, command, event(endpoints, job, "evaluate", seed, info))
        assert code == 0, err
        evaluation = json.loads(handle.shard(0).get(keys.evaluation(job)))
        return handle.read_parameters()[1], evaluation


def python(path):
    return [sys.executable, str(path)]


def load_digits(name, root=None):
    """data/digits/NAME (LIBSVM) as the driver stages it: features / 16 in f32, integer labels."""
    path = Path(root or Path(__file__).resolve().parents[2] / "data" / "digits") / name
    xs, ys = [], []
    for line in path.read_text().splitlines():
        label, *pairs = line.split()
        row = np.zeros(64, np.float32)
        for p in pairs:
            i, v = p.split(":")
            row[int(i) - 1] = np.float32(v) / np.float32(16)
        xs.append(row)
        ys.append(int(label))
    return np.stack(xs), np.array(ys, np.int64)
