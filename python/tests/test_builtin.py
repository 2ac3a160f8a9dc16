"""The built-in workloads in Python (smlt.builtin): the gradients against finite differences, the
batches, and `smlt train --function` running it as the worker function of a real job."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from smlt.builtin import Partition, Settings, batch, gradient, tensors

REPO = Path(__file__).resolve().parents[2]


def settings(model):
    return Settings.from_workload({"model": model, "inputs": "5", "classes": "3", "hidden": "4",
                                   "batch_size": "6", "seed": "1"})


def mean_loss(s, params, x, y):
    return gradient(s, params, x, y).loss


@pytest.mark.parametrize("model", ["softmax", "mlp"])
def test_gradient_matches_finite_differences(model):
    s = settings(model)
    rng = np.random.default_rng(7)
    params = {name: rng.standard_normal(shape) * 0.5 for name, shape in tensors(s)}  # f64 for the differences
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    got = gradient(s, params, x, y)
    assert set(got.gradients) == {name for name, _ in tensors(s)}
    assert got.examples == 6
    eps = 1e-6
    for name, shape in tensors(s):
        assert got.gradients[name].shape == shape and got.gradients[name].dtype == np.float32
        numeric = np.zeros(shape)
        for i in np.ndindex(*shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][i] += eps
            minus[name][i] -= eps
            numeric[i] = (mean_loss(s, plus, x, y) - mean_loss(s, minus, x, y)) / (2 * eps)
        np.testing.assert_allclose(got.gradients[name], numeric, rtol=1e-4, atol=1e-6, err_msg=name)


def test_batches_wrap_around_the_partition():
    p = Partition(np.arange(7, dtype=np.float32).reshape(7, 1), np.arange(7))
    assert list(batch(p, 0, 3)[1]) == [0, 1, 2]
    assert list(batch(p, 2, 3)[1]) == [6, 0, 1]
    assert list(batch(p, 1, 10)[1]) == [0, 1, 2, 3, 4, 5, 6]  # n = min(batch_size, rows)


@pytest.mark.parametrize("change, match", [
    (dict(model="resnet"), "model"), (dict(inputs="0"), "inputs"), (dict(batch_size="x"), "batch_size"),
    (dict(hidden=None), "hidden"),
])
def test_settings_are_checked(change, match):
    w = {"model": "mlp", "inputs": "5", "classes": "3", "hidden": "4", "batch_size": "6", "seed": "1", **change}
    with pytest.raises(Exception, match=match):
        Settings.from_workload({k: v for k, v in w.items() if v is not None})


def left_behind(*texts):
    """Processes of this user whose command line or environment contains one of `texts`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{part}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if int(pid) != os.getpid() and any(t in data for t in texts):
                found.append(f"{pid}: {data[:200]}")
                break
    return found


def train(procs, smlt_bin, job, *extra, model="softmax", steps=120):
    args = [smlt_bin, "train", "--dataset", "digits", "--model", model, "--workers", "3", "--shards", "2",
            "--steps", str(steps), "--job", job, "--json", *extra]
    proc = procs.start(args, "train", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env={**os.environ, "SMLT_DATA_DIR": str(REPO / "data")})
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)


def test_smlt_train_runs_python_functions_through_faults_and_time_limits(procs, smlt_bin):
    """`smlt train --function` runs `python -m smlt.builtin` as every worker invocation: with a
    4 s time limit (continuations) and injected SIGKILLs (relaunches) it trains digits as well as
    without them, to the same parameters, and leaves no process behind. (With 2 s, a loaded
    machine's 1.5 s imports left too little of a limit, and workers were killed at it.)"""
    function = f"{sys.executable} -m smlt.builtin"
    job = f"pyfn-{uuid.uuid4().hex[:8]}"
    out = train(procs, smlt_bin, job, "--function", function, "--inject-faults", "worker-kill=2",
                "--function-timeout", "4s", steps=400)
    assert out["faults_injected"] >= 1 or out["worker_relaunches"] >= 1, out
    assert out["continuations"] >= 1, out
    assert out["steps"] == 400 and out["workers"] == 3
    assert out["test_accuracy"] >= 0.85, out
    assert left_behind(job, function) == []
    # Relaunches and continuations do not change what is computed.
    calm = train(procs, smlt_bin, f"{job}-calm", "--function", function, steps=400)
    assert calm["continuations"] == 0 and calm["worker_relaunches"] == 0
    assert calm["param_digest"] == out["param_digest"]
    assert left_behind(job, function) == []


def test_smlt_train_runs_a_model_the_function_defines(procs, smlt_bin):
    """`smlt train --model function`: tests/np_function.py describes a softmax model (zeros), trains
    it with the built-in gradient and evaluates it on the staged test set; the run ends with the
    built-in softmax's parameters (same digest), also through killed workers, and reports the
    function's test metrics."""
    np_function = f"{sys.executable} {REPO / 'python' / 'tests' / 'np_function.py'}"
    job = f"pyfm-{uuid.uuid4().hex[:8]}"
    defined = train(procs, smlt_bin, job, "--function", np_function, "--lr", "0.5", "--inject-faults",
                    "worker-kill=2", model="function")
    assert defined["model"] == "function" and defined["parameters"] == 64 * 10 + 10
    assert defined["faults_injected"] >= 1 or defined["worker_relaunches"] >= 1, defined
    # Describe, three workers, evaluate: every invocation is counted.
    assert defined["invocations"] >= 5, defined
    assert "final_loss" not in defined and "train_accuracy" not in defined
    assert 0 < defined["test_loss"] < 1 and defined["test_accuracy"] >= 0.85, defined
    assert left_behind(job, np_function) == []
    builtin = train(procs, smlt_bin, f"{job}-builtin", "--function", f"{sys.executable} -m smlt.builtin", "--lr",
                    "0.5")
    assert builtin["param_digest"] == defined["param_digest"]
    # The Swift driver's evaluation of the same parameters, against the function's.
    assert builtin["test_accuracy"] == pytest.approx(defined["test_accuracy"], abs=0.01)


def test_a_function_without_a_describe_phase_stops_the_run(procs, smlt_bin):
    """smlt.builtin has no describe phase: `--model function` with it fails before any worker
    starts, naming the phase."""
    args = [smlt_bin, "train", "--model", "function", "--function", f"{sys.executable} -m smlt.builtin",
            "--steps", "3", "--shards", "1"]
    proc = procs.start(args, "train", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env={**os.environ, "SMLT_DATA_DIR": str(REPO / "data")})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "describe phase" in err, err


def test_python_workers_log_in_as_an_acl_user(procs, smlt_bin):
    """Shards whose default user has a password only the operator knows, and an ACL user for the
    job: `smlt serve` and `smlt train --user trainer` (password in SMLT_REDIS_PASSWORD) run Python
    workers, which log in as that user from the event's `user` and the environment's password."""
    import redis as redis_py
    admin = f"admin-{uuid.uuid4().hex}"
    secret = f"trainer-{uuid.uuid4().hex}"
    endpoints = [procs.redis(password=admin), procs.redis(password=admin)]
    for e in endpoints:
        host, port = e.rsplit(":", 1)
        conn = redis_py.Redis(host=host, port=int(port), password=admin)
        conn.execute_command("ACL", "SETUSER", "trainer", "on", f">{secret}", "~smlt:*", "+@all")
        conn.close()
    env = {**os.environ, "SMLT_DATA_DIR": str(REPO / "data"), "SMLT_REDIS_PASSWORD": secret}
    procs.start([smlt_bin, "serve", "--redis", ",".join(endpoints), "--user", "trainer"], "serve",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    job = f"pyacl-{uuid.uuid4().hex[:8]}"
    function = f"{sys.executable} -m smlt.builtin"
    args = [smlt_bin, "train", "--redis", ",".join(endpoints), "--user", "trainer", "--dataset", "digits",
            "--workers", "3", "--steps", "60", "--job", job, "--json", "--function", function]
    proc = procs.start(args, "train", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["steps"] == 60 and summary["test_accuracy"] >= 0.8, summary
    # The workers' starts are in Redis, written as the ACL user (the default user's password is
    # the operator's alone).
    host, port = endpoints[0].rsplit(":", 1)
    conn = redis_py.Redis(host=host, port=int(port), username="trainer", password=secret)
    assert conn.llen(f"smlt:{{{job}}}:starts") >= 3
    with pytest.raises(redis_py.AuthenticationError):
        redis_py.Redis(host=host, port=int(port), password=secret).ping()
    assert left_behind(job, function) == []
