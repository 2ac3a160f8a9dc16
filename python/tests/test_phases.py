"""The describe and evaluate phases of function-defined models (smlt.phases, smlt.worker.main):
the event's new fields, the rules for described tensors and evaluations, and function processes
invoked for each phase the way `smlt train --model function` invokes them (tests/np_function.py,
a numpy softmax regression, through a simulated driver and Swift `smlt serve`)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import function_driver as driver
from smlt import FunctionEvent, SpecError, TrainingConfig, keys, register_job
from smlt.blob import decode
from smlt.builtin import Settings, gradient
from smlt.client import connect
from smlt.phases import (DescribeError, EvaluationError, check_description, check_evaluation, read_description,
                         write_description)
from smlt.worker import DatasetInfo

HERE = Path(__file__).resolve().parent
NP_FUNCTION = driver.python(HERE / "np_function.py")
INFO = DatasetInfo(features=6, classes=3, train_examples=40, test_examples=9)


def test_events_carry_phase_seed_and_dataset():
    ev = driver.event(["127.0.0.1:7001"], "j", "describe", 2**64 - 1, INFO)
    assert FunctionEvent.from_json(ev.to_json()) == ev
    assert json.loads(ev.to_json())["dataset"] == {"features": 6, "classes": 3, "train_examples": 40,
                                                   "test_examples": 9}
    old = FunctionEvent.from_json('{"job": "j", "worker": 1, "generation": 0, "lease_ms": 300, "redis": ["a:1"]}')
    assert (old.phase, old.seed, old.dataset) == ("train", None, None)
    assert "phase" not in old.to_json()


@pytest.mark.parametrize("change, match", [
    ({"phase": "predict"}, "'phase' is 'predict'"), ({"seed": -1}, "'seed'"), ({"seed": 2**64}, "'seed'"),
    ({"dataset": [1]}, "dataset must be an object"), ({"dataset": {"features": 0}}, "'features'"),
    ({"dataset": {"features": 2, "classes": 2, "train_examples": 1, "test_examples": "9"}}, "'test_examples'"),
])
def test_bad_event_fields_are_refused(change, match):
    e = {"job": "j", "worker": 0, "generation": 0, "lease_ms": 300, "redis": ["a:1"], **change}
    with pytest.raises(SpecError, match=match):
        FunctionEvent.from_json(json.dumps(e))


@pytest.mark.parametrize("tensors, match", [
    ({}, "at least one tensor"),
    ({"": np.zeros(1, np.float32)}, "non-empty"),
    ({"x" * 201: np.zeros(1, np.float32)}, "longer than 200 bytes"),
    ({"é" * 101: np.zeros(1, np.float32)}, "longer than 200 bytes"),
    ({"a\nb": np.zeros(1, np.float32)}, "control character"),
    ({"a\x85": np.zeros(1, np.float32)}, "control character"),
    ({"s": np.float32(1)}, r"shape \(\)"),
    ({"z": np.zeros((2, 0), np.float32)}, "each >= 1"),
    ({"d": np.zeros((1,) * 9, np.float32)}, "1 to 8 dimensions"),
    ({"f": np.array([0.1])}, "float64 is not exactly representable"),
    ({"n": np.array([np.nan], np.float32)}, "not finite"),
])
def test_described_tensors_are_checked(tensors, match):
    with pytest.raises(DescribeError, match=match):
        check_description(tensors)


def test_description_writes_the_tensors_first_and_the_manifest_last():
    class Recorder:
        def __init__(self):
            self.sets = []

        def pipeline(self, transaction):
            return self

        def set(self, key, value):
            self.sets.append((key, value))

        def execute(self):
            pass

    r = Recorder()
    tensors = {"conv1.weight": np.arange(72, dtype=np.float32).reshape(8, 1, 3, 3), "é.bias": np.ones(8)}
    write_description(r, "j", tensors)
    assert [k for k, _ in r.sets] == ["smlt:{j}:describe:0", "smlt:{j}:describe:1", "smlt:{j}:describe"]
    assert json.loads(r.sets[2][1]) == {"tensors": [{"name": "conv1.weight", "shape": [8, 1, 3, 3]},
                                                    {"name": "é.bias", "shape": [8]}]}
    for (_, blob), value in zip(r.sets, tensors.values()):
        b = decode(blob)
        assert (b.header.step, b.header.producer) == (0, 0)
        assert b.values.tobytes() == np.asarray(value, np.float32).tobytes()


@pytest.mark.parametrize("metrics, match", [
    ({"test_loss": 1.0}, "needs 'test_accuracy'"),
    ({"test_loss": float("nan"), "test_accuracy": 0.5}, "'test_loss' is nan"),
    ({"test_loss": 1.0, "test_accuracy": 1.5}, r"in \[0, 1\]"),
    ({"test_loss": 1.0, "test_accuracy": 0.5, "train_accuracy": -0.1}, "train_accuracy"),
    ({"test_loss": "x", "test_accuracy": 0.5}, "not a number"),
    ({"test_loss": 1.0, "test_accuracy": 0.5, "f1": 0.3}, r"unknown evaluation fields \['f1'\]"),
])
def test_evaluations_are_checked(metrics, match):
    with pytest.raises(EvaluationError, match=match):
        check_evaluation(metrics)


def test_describe_phase_writes_the_documented_keys(procs):
    endpoints = [procs.redis(), procs.redis()]
    code, err = driver.invoke(procs, NP_FUNCTION, driver.event(endpoints, "np", "describe", 5, INFO))
    assert code == 0, err
    home = connect(endpoints[0])
    assert sorted(home.keys("*")) == [b"smlt:{np}:describe", b"smlt:{np}:describe:0", b"smlt:{np}:describe:1"]
    assert json.loads(home.get(keys.describe("np"))) == {"tensors": [{"name": "weight", "shape": [6, 3]},
                                                                     {"name": "bias", "shape": [3]}]}
    tensors = read_description(home, "np")
    assert tensors["weight"].shape == (6, 3) and not tensors["weight"].any() and not tensors["bias"].any()
    assert connect(endpoints[1]).keys("*") == []


def test_a_phase_the_function_lacks_exits_1(procs):
    endpoints = [procs.redis()]
    train_only = [sys.executable, "-c", "from smlt.worker import main; main(lambda step, params: None)"]
    code, err = driver.invoke(procs, train_only, driver.event(endpoints, "none", "describe", 1, INFO))
    assert code == 1 and "PhaseError" in err and "describe" in err, err
    assert connect(endpoints[0]).keys("*") == []


def test_evaluate_phase_writes_the_documented_json(procs):
    endpoints = [procs.redis(), procs.redis()]
    rng = np.random.default_rng(4)
    params = {"weight": rng.standard_normal((6, 3)).astype(np.float32), "bias": np.float32([0.5, -1, 0])}
    tx = rng.random((9, 6), np.float32)
    ty = rng.integers(0, 3, 9)
    config = TrainingConfig(workers=1, steps=0, learning_rate=0.1, momentum=0.0, weight_decay=0.0)
    register_job(endpoints, "ev", params, config, chunk_elements=7,
                 objects=driver.stage(1, tx, ty, tx, ty)).close()
    code, err = driver.invoke(procs, NP_FUNCTION, driver.event(endpoints, "ev", "evaluate", 1, INFO))
    assert code == 0, err
    got = json.loads(connect(endpoints[0]).get(keys.evaluation("ev")))
    want = gradient(Settings("softmax", 6, 3, 9, 0), params, tx, ty)
    assert got == {"test_loss": want.loss, "test_accuracy": want.accuracy}


def test_evaluate_phase_refuses_a_test_set_of_the_wrong_size(procs):
    endpoints = [procs.redis()]
    params = {"weight": np.zeros((6, 3), np.float32), "bias": np.zeros(3, np.float32)}
    config = TrainingConfig(workers=1, steps=0, learning_rate=0.1, momentum=0.0, weight_decay=0.0)
    tx, ty = np.zeros((8, 6), np.float32), np.zeros(8)
    register_job(endpoints, "short", params, config, objects=driver.stage(1, tx, ty, tx, ty)).close()
    code, err = driver.invoke(procs, NP_FUNCTION, driver.event(endpoints, "short", "evaluate", 1, INFO))
    assert code == 1 and "test-y has 8 labels, the event says 9 test examples" in err, err
    assert connect(endpoints[0]).get(keys.evaluation("short")) is None


def reference(x, y, workers, steps, lr, momentum, batch_size):
    """The BSP run of the built-in softmax from zeros, in this process (f32)."""
    from smlt.builtin import Partition, batch
    s = Settings("softmax", x.shape[1], 10, batch_size, 0)
    params = {"weight": np.zeros((x.shape[1], 10), np.float32), "bias": np.zeros(10, np.float32)}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    parts = [Partition(x[w::workers], y[w::workers]) for w in range(workers)]
    for t in range(steps):
        grads = [gradient(s, params, *batch(p, t, batch_size)).gradients for p in parts]
        for k in params:
            total = grads[0][k].copy()
            for g in grads[1:]:
                total = total + g[k]
            velocity[k] = np.float32(momentum) * velocity[k] + total * (np.float32(1) / np.float32(workers))
            params[k] = params[k] - np.float32(lr) * velocity[k]
    return params


def test_a_numpy_function_model_trains_digits_through_all_phases(cluster, procs):
    x, y = driver.load_digits("train.libsvm")
    tx, ty = driver.load_digits("test.libsvm")
    params, evaluation = driver.train(procs, NP_FUNCTION, cluster, "npdigits", x, y, tx, ty, workers=3, steps=60,
                                      lr=0.5)
    want = reference(x, y, 3, 60, 0.5, 0.9, 16)
    for k in want:
        np.testing.assert_allclose(params[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
    mine = gradient(Settings("softmax", 64, 10, 1, 0), params, tx, ty)
    assert evaluation == {"test_loss": mine.loss, "test_accuracy": mine.accuracy}
    assert evaluation["test_accuracy"] >= 0.85, evaluation


def test_smlt_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
            "import smlt, smlt.worker, smlt.phases, smlt.builtin\n"
            "try:\n    import smlt.torch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "smlt.torch needs PyTorch: pip install 'smlt[torch]'" in out.stdout
