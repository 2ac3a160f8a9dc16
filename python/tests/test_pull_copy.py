"""The pull copy (docs/wire-format.md, "The pull copy"): a job whose map names a
``pull_encoding`` keeps every parameter version also rounded to bf16 or f16, and workers pull
that copy. Python registers the job, Swift ``smlt serve`` writes the copies, and a Python and a
Swift worker train from them."""

import json
import threading

import numpy as np
import pytest

import softmax
from smlt import Worker, keys
from smlt.blob import Codec, Dtype, decode, round_to
from smlt.layout import ShardMap, SpecError, TensorSpec
from test_worker_job import event, finish, swift_function


def test_a_map_names_its_pull_encoding_and_refuses_bad_ones():
    m = ShardMap.create("j", ["127.0.0.1:7000"], [TensorSpec("w", (4,))], pull_encoding="bf16")
    text = m.to_json()
    assert json.loads(text)["pull_encoding"] == "bf16-raw"
    assert ShardMap.from_json(text) == m
    assert m.pulled_key is keys.pull_copy
    plain = ShardMap.create("j", ["127.0.0.1:7000"], [TensorSpec("w", (4,))])
    assert "pull_encoding" not in json.loads(plain.to_json()) and plain.pulled_key is keys.params
    for bad in ["f32", "shuffle-lz4", "topk:0.1", "bf16-sparse-lz4", "bf16-zstd", 2, None]:
        broken = json.loads(text)
        broken["pull_encoding"] = bad
        with pytest.raises(SpecError, match="pull_encoding"):
            ShardMap.from_json(json.dumps(broken))


def test_python_and_swift_workers_train_from_the_pull_copy(cluster, procs, smlt_bin):
    x, y = softmax.dataset()
    workers, steps = 2, 8
    job = softmax.register(cluster, "pulled", workers, steps, x, y, pull_encoding="bf16-shuffle-lz4")
    with job:
        m = job.map
        assert m.pull_encoding.dtype == Dtype.BF16 and m.pull_encoding.codec == Codec.SHUFFLE_LZ4
        # Version 0: Python wrote both copies.
        for (_, params), (_, pulled) in zip(job.read_chunks(), job.read_chunks(keys.pull_copy)):
            assert np.array_equal(round_to(params, "bf16"), pulled)
        px, py = softmax.partitions(workers, x, y)[0]
        inproc = Worker(event(cluster, "pulled", 0))
        codes = {}
        thread = threading.Thread(target=lambda: codes.update(
            w0=inproc.run(lambda t, p: softmax.gradient(p, px, py, t))), daemon=True)
        thread.start()
        try:
            code, err = finish(swift_function(procs, smlt_bin, event(cluster, "pulled", 1)))
            assert code == 0, err
        finally:
            thread.join(60)
            inproc.close()
        assert codes == {"w0": 0}
        job.wait_version(steps, timeout=30)
        version, params = job.read_parameters()
        assert version == steps
        # The servers' copies are the f32 master rounded, at the same version.
        for c, ((vp, p), (vc, copy)) in enumerate(zip(job.read_chunks(), job.read_chunks(keys.pull_copy))):
            assert vp == vc == steps
            assert np.array_equal(round_to(p, "bf16"), copy), c
            raw = job.shard(m.assignment[c]).get(keys.pull_copy("pulled", c))
            assert decode(raw).header.dtype == Dtype.BF16
        # The workers computed from the rounded weights, the servers stepped the f32 master.
        want = softmax.reference(workers, steps, x, y, pulled="bf16")
        for k in want:
            np.testing.assert_allclose(params[k], want[k], rtol=1e-4, atol=1e-6, err_msg=k)
        unrounded = softmax.reference(workers, steps, x, y)
        assert any(not np.allclose(params[k], unrounded[k], rtol=1e-4, atol=1e-6) for k in want), \
            "the run matches a reference without the pull copy's rounding"
