"""smlt.torch: a module's parameters as a job's tensors, bit-exact through the blob codec and the
registered layout (describe, register, pull, push of the gradients), and python/examples/digits_cnn.py
run through every phase by a simulated `smlt train --model function` driver with Swift servers, to
exactly the parameters of the same BSP run computed in this process."""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import function_driver as driver  # noqa: E402
import smlt.torch as st  # noqa: E402
from smlt import FunctionEvent, Job, keys  # noqa: E402
from smlt.blob import decode  # noqa: E402
from smlt.layout import ShardMap, TrainingConfig  # noqa: E402
from smlt.phases import check_description  # noqa: E402
from smlt.tensors import flatten, specs_of, unflatten  # noqa: E402
from smlt.worker import Worker  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
from digits_cnn import DigitsCNN  # noqa: E402


class Odd(torch.nn.Module):
    """Parameters of every kind: a 0-dim one, a frozen one, one unused in forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.lin = torch.nn.Linear(4, 3)
        self.scale = torch.nn.Parameter(torch.tensor(1.5))
        self.frozen = torch.nn.Parameter(torch.randn(2, 2), requires_grad=False)
        self.unused = torch.nn.Parameter(torch.randn(5))

    def forward(self, x):
        return self.lin(x) * self.scale


def bits(a):
    return np.asarray(a, np.float32).tobytes()


def test_describe_follows_named_parameters():
    m = Odd()
    d = st.describe(m)
    assert list(d) == [n for n, _ in m.named_parameters()] == ["scale", "frozen", "unused", "lin.weight", "lin.bias"]
    for name, p in m.named_parameters():
        assert d[name].dtype == np.float32 and bits(d[name]) == bits(p.detach().numpy())
    assert d["scale"].shape == (1,)
    check_description(d)
    with pytest.raises(st.ModelMismatch, match="float64"):
        st.describe(torch.nn.Linear(2, 2).double())


def test_register_pull_and_push_are_bit_exact(procs):
    endpoints = [procs.redis(), procs.redis()]
    m = Odd()
    config = TrainingConfig(workers=1, steps=1, learning_rate=0.1, momentum=0.0, weight_decay=0.0)
    with st.register(endpoints, "torchy", m, config, chunk_elements=7, codec="shuffle-lz4") as job:
        layout = job.map.layout
        assert [(t.name, t.shape) for t in layout.tensors] == [(n, st._shape(p)) for n, p in m.named_parameters()]
        st.check_layout(m, layout)
        version, params = Job.open(endpoints, "torchy").read_parameters()
        assert version == 0
        assert {k: bits(v) for k, v in params.items()} == {k: bits(v) for k, v in st.describe(m).items()}

        # pull into another instance, in place (the Parameter objects stay the same)
        other = Odd()
        with torch.no_grad():
            for p in other.parameters():
                p.zero_()
        before = [id(p) for p in other.parameters()]
        st.pull(other, params)
        assert [id(p) for p in other.parameters()] == before
        for (_, p), (_, q) in zip(m.named_parameters(), other.named_parameters()):
            assert bits(p.detach().numpy()) == bits(q.detach().numpy())
        assert other.scale.dim() == 0

        # push the gradients: .grad as is, zeros for the frozen and the unused parameters
        other(torch.randn(6, 4)).square().mean().backward()
        grads = st.gradients(other)
        assert not grads["frozen"].any() and not grads["unused"].any()
        assert bits(grads["lin.weight"]) == bits(other.lin.weight.grad.numpy())
        w = Worker(FunctionEvent("torchy", 0, 0, 1000, tuple(endpoints)))
        try:
            w.push(flatten(grads, layout), 0)
        finally:
            w.close()
        chunks = {c: decode(job.shard(i).get(keys.grad("torchy", c, 0, 0))).values
                  for i in range(2) for c in job.map.chunks_of(i)}
        pushed = unflatten(np.concatenate([chunks[c] for c in range(layout.num_chunks)]), layout)
        assert {k: bits(v) for k, v in pushed.items()} == {k: bits(v) for k, v in grads.items()}


def test_a_module_that_is_not_the_job_is_refused():
    m = Odd()
    d = st.describe(m)
    d["lin.bias"] = np.zeros(4, np.float32)
    layout = ShardMap.create("x", ["a:1"], specs_of(d)).layout
    with pytest.raises(st.ModelMismatch, match="lin.bias"):
        st.check_layout(m, layout)
    with pytest.raises(st.ModelMismatch, match="do not match"):
        st.pull(m, {"lin.weight": np.zeros((3, 4), np.float32)})


def local_bsp(x, y, workers, steps, lr, momentum, batch_size, seed):
    """The same run in this process, with the servers' f32 arithmetic: the sum of the workers'
    gradients in worker order, g = sum · (1/workers), v = momentum·v + g, p = p − lr·v."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    params = [p.detach().clone() for p in model.parameters()]
    velocity = [torch.zeros_like(p) for p in params]
    lr, momentum = torch.tensor(lr, dtype=torch.float32), torch.tensor(momentum, dtype=torch.float32)
    parts = [(x[w::workers], y[w::workers]) for w in range(workers)]
    for t in range(steps):
        total = [torch.zeros_like(p) for p in params]
        for px, py in parts:
            n = min(batch_size, len(py))
            idx = (t * n + np.arange(n)) % len(py)
            st.pull(model, dict(zip([n for n, _ in model.named_parameters()], [p.numpy() for p in params])))
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(px[idx])), torch.from_numpy(py[idx])).backward()
            total = [s + p.grad for s, p in zip(total, model.parameters())]
        for i in range(len(params)):
            velocity[i] = momentum * velocity[i] + total[i] * (1 / workers)
            params[i] = params[i] - lr * velocity[i]
    return {n: p.numpy() for (n, _), p in zip(model.named_parameters(), params)}


def test_the_digits_cnn_example_trains_through_all_phases(cluster, procs):
    torch.set_num_threads(1)
    x, y = driver.load_digits("train.libsvm")
    tx, ty = driver.load_digits("test.libsvm")
    command = driver.python(EXAMPLES / "digits_cnn.py")
    steps = 10  # torch's import (seconds) is most of this test's time: 2 workers, a few steps
    params, evaluation = driver.train(procs, command, cluster, "cnn", x, y, tx, ty, workers=2, steps=steps,
                                      lr=0.1, seed=7)
    want = local_bsp(x, y, 2, steps, 0.1, 0.9, 16, seed=7)
    assert list(params) == list(want)
    for k in want:
        np.testing.assert_array_equal(params[k], want[k], err_msg=k)  # bit-exact
    model = DigitsCNN()
    st.pull(model, params)
    assert evaluation == st.evaluate(model, torch.nn.functional.cross_entropy, tx, ty)
