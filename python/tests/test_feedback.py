"""Gradient encodings and error feedback in the Python client (smlt.feedback), and Python workers
pushing bf16 with error feedback in jobs served by Swift `smlt serve`, beside Swift `smlt worker`s.

The residual is worker state: a Python worker stopped by its time limit again and again ends the
job with the same bits as one that ran through, with a Swift worker beside it in both jobs."""

import json
import threading
import time

import numpy as np
import pytest

import softmax
from smlt import SpecError, TrainingConfig, keys
from smlt.blob import Codec, Dtype, decode, encode, round_to, topk_indices
from smlt.feedback import (EncodingError, GradientEncoding, apply_feedback, checkpoint_residual_name, residual_codec,
                           residual_name, residual_part_name)
from test_worker_job import event, finish, python_function, swift_function


@pytest.mark.parametrize("spec, dtype, codec, canonical", [
    ("raw", Dtype.F32, Codec.RAW, "raw"), ("lz4", Dtype.F32, Codec.LZ4, "lz4"),
    ("shuffle-lz4", Dtype.F32, Codec.SHUFFLE_LZ4, "shuffle-lz4"), ("f32", Dtype.F32, Codec.RAW, "raw"),
    ("bf16", Dtype.BF16, Codec.RAW, "bf16-raw"), ("f16", Dtype.F16, Codec.RAW, "f16-raw"),
    ("bf16-shuffle-lz4", Dtype.BF16, Codec.SHUFFLE_LZ4, "bf16-shuffle-lz4"), ("f16-lz4", Dtype.F16, Codec.LZ4, "f16-lz4"),
    ("f32-shuffle-lz4", Dtype.F32, Codec.SHUFFLE_LZ4, "shuffle-lz4"),
    ("bitshuffle-lz4", Dtype.F32, Codec.BITSHUFFLE_LZ4, "bitshuffle-lz4"),
    ("f32-bitshuffle-lz4", Dtype.F32, Codec.BITSHUFFLE_LZ4, "bitshuffle-lz4"),
    ("bf16-bitshuffle-lz4", Dtype.BF16, Codec.BITSHUFFLE_LZ4, "bf16-bitshuffle-lz4"),
    ("f16-bitshuffle-lz4", Dtype.F16, Codec.BITSHUFFLE_LZ4, "f16-bitshuffle-lz4"),
    ("topk:0.01", Dtype.F32, Codec.SPARSE_LZ4, "topk:0.01"), ("bf16-topk:0.1", Dtype.BF16, Codec.SPARSE_LZ4, "bf16-topk:0.1"),
    ("topk:1", Dtype.F32, Codec.SPARSE_LZ4, "topk:1.0"), ("topk:1e-3", Dtype.F32, Codec.SPARSE_LZ4, "topk:0.001"),
])
def test_specs_parse_as_the_swift_client_parses_them(spec, dtype, codec, canonical):
    e = GradientEncoding.parse(spec)
    lossy = dtype != Dtype.F32 or (e.topk is not None and e.topk < 1)
    assert (e.dtype, e.codec, e.spec, e.lossy) == (dtype, codec, canonical, lossy)
    assert GradientEncoding.parse(canonical) == e


@pytest.mark.parametrize("spec", ["", "bf17", "bf16-zstd", "BF16", "bf16-", "lz4-bf16", 3, None, "topk:0", "topk:1.5",
                                  "topk:-0.1", "topk:nan", "topk:", "topk:0x1p-3", "top:0.1", "bf17-topk:0.1",
                                  "bitshuffle", "bf16-bitshuffle", "bitshuffle-lz4-bf16", "bf16-bitshuffle-lz4-"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(EncodingError):
        GradientEncoding.parse(spec)


def test_a_config_with_an_unknown_encoding_is_invalid():
    base = {"workers": 1, "steps": 1, "learning_rate": 0.1, "momentum": 0, "weight_decay": 0}
    c = TrainingConfig.from_json(json.dumps({**base, "gradient_encoding": "bf16-shuffle-lz4"}))
    assert c.gradient_encoding == "bf16-shuffle-lz4" and json.loads(c.to_json())["gradient_encoding"] == c.gradient_encoding
    assert c.encoding("raw") == GradientEncoding(Dtype.BF16, Codec.SHUFFLE_LZ4)
    bits = TrainingConfig.from_json(json.dumps({**base, "gradient_encoding": "bf16-bitshuffle-lz4"}))
    assert bits.encoding("raw") == GradientEncoding(Dtype.BF16, Codec.BITSHUFFLE_LZ4)
    plain = TrainingConfig.from_json(json.dumps(base))
    assert plain.encoding("lz4") == GradientEncoding(Dtype.F32, Codec.LZ4)
    assert plain.encoding("bitshuffle-lz4") == GradientEncoding(Dtype.F32, Codec.BITSHUFFLE_LZ4)
    assert "gradient_encoding" not in json.loads(plain.to_json())
    for bad in ("bf16-gzip", 16):
        with pytest.raises(SpecError, match="gradient_encoding|gradient encoding"):
            TrainingConfig.from_json(json.dumps({**base, "gradient_encoding": bad}))


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_error_feedback_keeps_what_rounding_took_off(dtype):
    """q + r' is exactly g + r; q is what the blob holds; over many steps the pushed values sum to
    the gradients' sum minus the last residual. (Ties, subnormals and large values included.)"""
    encoding = GradientEncoding.parse(dtype)
    rng = np.random.default_rng(5)
    special = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1e-40, -3e-39, 2**-24, 2**-25, 1000.5],
                       dtype=np.float32)
    residual, pushed, total = None, np.zeros(300), np.zeros(300)
    for t in range(20):
        g = rng.uniform(-0.01, 0.01, 300).astype(np.float32)
        g[:special.size] = special
        v = g if residual is None else g + residual
        sent, r = apply_feedback(g, residual, encoding)
        assert sent.dtype == np.float32 and r.dtype == np.float32
        assert np.array_equal(sent + r, v)
        assert np.array_equal(sent, round_to(v, dtype))
        assert decode(encode(v, "raw", dtype=dtype)).values.tobytes() == sent.tobytes()
        pushed += sent
        total += g
        residual = r
    np.testing.assert_allclose(total - pushed, residual, atol=1e-6)
    g = np.array([1.5, 2], np.float32)
    assert apply_feedback(g, None, GradientEncoding.parse("lz4"))[1] is None


@pytest.mark.parametrize("spec", ["topk:0.1", "bf16-topk:0.3"])
def test_top_k_keeps_everything_it_did_not_send(spec):
    encoding = GradientEncoding.parse(spec)
    rng = np.random.default_rng(9)
    residual = None
    for t in range(5):
        g = rng.standard_normal(100).astype(np.float32)
        v = g if residual is None else g + residual
        sent, r = apply_feedback(g, residual, encoding, chunk_elements=37)
        assert np.array_equal(sent + r, v)
        for start in range(0, 100, 37):
            part, got = v[start:start + 37], sent[start:start + 37]
            idx = topk_indices(part, encoding.topk)
            assert np.array_equal(np.flatnonzero(got != 0), idx)
            assert np.array_equal(got[idx], round_to(part[idx], encoding.dtype))
        residual = r


def run_job(cluster, procs, smlt_bin, job_id, limited, spec="bf16-shuffle-lz4"):
    """A two-worker bf16 job: worker 0 a Python function (with a 1 s time limit and slow steps
    when `limited`, so it goes through several generations), worker 1 Swift's `smlt worker`."""
    x, y = softmax.dataset()
    steps = 13
    job = softmax.register(cluster, job_id, 2, steps, x, y, gradient_encoding=spec)
    swift = swift_function(procs, smlt_bin, event(cluster, job_id, 1))
    codes = []
    env = dict(SMLT_FUNCTION_TIMEOUT_MS="1000", SLOW_STEP_S="0.15") if limited else {}
    for generation in range(40):
        code, err = finish(python_function(procs, event(cluster, job_id, 0, generation), **env))
        codes.append(code)
        assert code in (0, 75), err
        if code == 0:
            break
    code, err = finish(swift)
    assert code == 0, err
    job.wait_version(steps, timeout=30)
    return job, codes, x, y


@pytest.mark.parametrize("spec", ["bf16-shuffle-lz4", "topk:0.3"])
def test_a_python_worker_resumes_its_residual_exactly_beside_a_swift_worker(cluster, procs, smlt_bin, spec):
    name = spec.replace(":", "-")
    calm, calm_codes, x, y = run_job(cluster, procs, smlt_bin, f"ef-calm-{name}", limited=False, spec=spec)
    limited, codes, _, _ = run_job(cluster, procs, smlt_bin, f"ef-limited-{name}", limited=True, spec=spec)
    with calm, limited:
        assert calm_codes == [0] and codes.count(75) >= 2, codes
        v1, p1 = calm.read_parameters()
        v2, p2 = limited.read_parameters()
        assert v1 == v2 == 13
        for k in p1:
            assert p1[k].tobytes() == p2[k].tobytes(), k
        # Close to an all-Python run with error feedback (Swift's gradient differs from numpy's in
        # the last bits, so not equal).
        want = softmax.reference(2, 13, x, y, encoding=GradientEncoding.parse(spec))
        for k in want:
            np.testing.assert_allclose(p1[k], want[k], rtol=1e-3, atol=1e-4, err_msg=k)
        # Both workers' progress names the residual of step 13, stored as that step's blob.
        for w in range(2):
            state = json.loads(limited.get_object(f"state-{w}"))
            assert state["next_step"] == 13 and state["residual"] == residual_name(w, 13) == f"residual-{w}-1"
            # In parts, one per chunk of the layout (none under the name itself), written with the
            # codec the encoding calls for (bit planes for bf16-shuffle-lz4, raw for top-k).
            layout = limited.map.layout
            assert limited.get_object(state["residual"]) is None
            blobs = [decode(limited.get_object(residual_part_name(state["residual"], part)))
                     for part in range(layout.num_chunks)]
            assert layout.num_chunks > 1
            assert limited.get_object(residual_part_name(state["residual"], layout.num_chunks)) is None
            for part, b in enumerate(blobs):
                assert (b.header.step, b.header.producer, b.values.size) == (13, w, len(layout.chunk_range(part)))
                assert b.header.codec in (residual_codec(GradientEncoding.parse(spec)), Codec.RAW)
            values = np.concatenate([b.values for b in blobs])
            assert np.abs(values).max() > 0
            if spec.startswith("bf16"):
                # What a residual of bf16 rounding is: at most half a bf16 step, so its low 8 bits
                # of f32 significand are zero.
                normal = values[np.abs(values) >= np.finfo(np.float32).tiny]
                assert not (normal.view(np.uint32) & 0xFF).any()


@pytest.mark.parametrize("spec", ["bf16-shuffle-lz4", "topk:0.3"])
def test_a_half_finished_push_resumes_from_the_residual_it_stored(cluster, spec):
    """Worker 0 stores its step-0 push (gradient chunks and the residual of step 1) and counts it on
    the home shard only, then "dies" before saving progress; its next invocation finishes that
    push, goes on at step 1 from the stored residual, and the job ends as an all-Python reference
    with error feedback."""
    from smlt import Worker
    from smlt.tensors import flatten, unflatten
    x, y = softmax.dataset()
    encoding = GradientEncoding.parse(spec)
    job_id = "ef-half-" + spec.replace(":", "-")
    job = softmax.register(cluster, job_id, 2, 3, x, y, gradient_encoding=encoding.spec)
    parts = softmax.partitions(2, x, y)
    a, b = Worker(event(cluster, job_id, 0)), Worker(event(cluster, job_id, 1))
    with job:
        layout = job.map.layout
        pa, pb = a.pull(0, 5), b.pull(0, 5)
        ga = flatten(softmax.gradient(unflatten(pa.params, layout), *parts[0], 0).gradients, layout)
        gb = flatten(softmax.gradient(unflatten(pb.params, layout), *parts[1], 0).gradients, layout)
        sa, ra = apply_feedback(ga, None, encoding, 5)
        sb, rb = apply_feedback(gb, None, encoding, 5)
        assert a._store(sa, 0, ra) == "residual-0-1"
        a._announce(0, 0)
        a.close()
        b.save_progress(1, b.push(sb, 0, rb))
        deadline = time.monotonic() + 10
        while job.version(0) != 1:
            assert time.monotonic() < deadline, "the home shard did not commit step 0"
            time.sleep(0.02)
        time.sleep(0.3)
        assert job.version(1) == 0 and all(job.map.chunks_of(i) for i in range(2))
        again = Worker(event(cluster, job_id, 0, generation=1))  # no saved progress: starts at 0
        codes = {}
        thread = threading.Thread(target=lambda: codes.update(
            b=b.run(lambda t, p: softmax.gradient(p, *parts[1], t))), daemon=True)
        thread.start()
        seen = []

        def compute(t, p):
            seen.append((t, json.loads(job.get_object("state-0"))))
            return softmax.gradient(p, *parts[0], t)

        try:
            codes["a"] = again.run(compute)
        finally:
            thread.join(60 if "a" in codes else 1)
            again.close()
            b.close()
        assert codes == {"a": 0, "b": 0}
        # Step 0 is not computed again; step 1 starts from the residual step 0's push stored.
        assert [t for t, _ in seen] == [1, 2]
        assert seen[0][1] == {"next_step": 1, "generation": 1, "residual": "residual-0-1"}
        job.wait_version(3, timeout=30)
        version, params = job.read_parameters()
        assert version == 3
        want = softmax.reference(2, 3, x, y, encoding=encoding)
        for k in want:
            np.testing.assert_allclose(params[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("spec, codec", [
    ("bf16-shuffle-lz4", Codec.BITSHUFFLE_LZ4), ("bf16-bitshuffle-lz4", Codec.BITSHUFFLE_LZ4),
    ("f16-lz4", Codec.BITSHUFFLE_LZ4), ("bf16", Codec.BITSHUFFLE_LZ4), ("f16", Codec.BITSHUFFLE_LZ4),
    ("topk:0.1", Codec.RAW),
    ("bf16-topk:0.1", Codec.RAW)])
def test_the_residual_codec_follows_the_encoding(spec, codec):
    """As ErrorFeedback.residualCodec: bit planes for a dense bf16 or f16 encoding, raw for top-k; the stored residual decodes to the same bits, and bit planes are smaller."""
    encoding = GradientEncoding.parse(spec)
    assert residual_codec(encoding) == codec
    g = np.random.default_rng(7).uniform(-0.05, 0.05, 4096).astype(np.float32)
    _, r = apply_feedback(g, None, encoding, 1024)
    blob = encode(r, codec, 1, 0)
    assert decode(blob).values.tobytes() == r.tobytes()
    if codec == Codec.BITSHUFFLE_LZ4:
        assert len(blob) < len(encode(r, "raw", 1, 0)) * 3 // 4


def test_a_push_at_a_checkpoint_version_stores_the_residual_copy(cluster):
    """With checkpoint_every = 2, the push of step 1 (whose residual is version 2's) also stores
    the residual as ckpt-residual-W-1 (2 // 2 % 2), part by part, as the Swift workers do; the
    push of step 0 stores none."""
    from smlt import Worker
    x, y = softmax.dataset()
    encoding = GradientEncoding.parse("bf16-shuffle-lz4")
    job = softmax.register(cluster, "ef-ckpt-copy", 1, 4, x, y, gradient_encoding=encoding.spec, checkpoint_every=2)
    with job:
        layout = job.map.layout
        w = Worker(event(cluster, "ef-ckpt-copy", 0))
        try:
            g = np.random.default_rng(5).standard_normal(layout.total).astype(np.float32) * 0.01
            _, r0 = apply_feedback(g, None, encoding, layout.chunk_elements)
            w._store(g, 0, r0)
            name = checkpoint_residual_name(0, 2, 2)
            assert name == "ckpt-residual-0-1"
            assert all(job.get_object(residual_part_name(n, p)) is None for n in (name, checkpoint_residual_name(0, 1, 2))
                       for p in range(layout.num_chunks))
            _, r1 = apply_feedback(g, r0, encoding, layout.chunk_elements)
            w._store(g, 1, r1)
            for part in range(layout.num_chunks):
                b = decode(job.get_object(residual_part_name(name, part)))
                rng = layout.chunk_range(part)
                assert (b.header.step, b.header.producer) == (2, 0)
                assert b.values.tobytes() == r1[rng.start:rng.stop].tobytes()
        finally:
            w.close()
