"""Python workers taking part in jobs served by Swift `smlt serve`, alongside Swift `smlt worker`s.

Every job is registered by Python from named numpy arrays and checked against an f32 reference of
the same BSP run computed in this process.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import softmax
from smlt import FunctionEvent, PushLost, Worker, keys
from smlt.blob import decode

HERE = Path(__file__).resolve().parent


def event(endpoints, job, worker, generation=0, lease_ms=1000):
    return FunctionEvent(job, worker, generation, lease_ms, tuple(endpoints))


def python_function(procs, ev, **env):
    """Start tests/py_function.py as a function invocation."""
    return procs.start([sys.executable, str(HERE / "py_function.py")], "pyworker",
                       env={**os.environ, "SMLT_FUNCTION_EVENT": ev.to_json(), **env},
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def swift_function(procs, smlt_bin, ev):
    return procs.start([smlt_bin, "worker"], "worker", env={**os.environ, "SMLT_FUNCTION_EVENT": ev.to_json()},
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=60):
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def assert_matches_reference(job, workers, steps, x, y):
    job.wait_version(steps, timeout=30)
    version, params = job.read_parameters()
    assert version == steps
    want = softmax.reference(workers, steps, x, y)
    for k in want:
        np.testing.assert_allclose(params[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert np.abs(params["weight"]).max() > 0.01  # it did train


def test_python_and_swift_workers_train_one_job(cluster, procs, smlt_bin):
    x, y = softmax.dataset()
    workers, steps = 3, 10
    job = softmax.register(cluster, "mixed", workers, steps, x, y)
    with job:
        job.shard(0).set(keys.hold("mixed"), "4")  # workers must stop before step 4
        # workers 0 and 1 are Python (one in this process, one as a function process), 2 is Swift
        px, py = softmax.partitions(workers, x, y)[0]
        inproc = Worker(event(cluster, "mixed", 0))
        codes = {}
        thread = threading.Thread(target=lambda: codes.update(
            w0=inproc.run(lambda t, p: softmax.gradient(p, px, py, t))), daemon=True)
        thread.start()
        try:
            py_proc = python_function(procs, event(cluster, "mixed", 1))
            swift_proc = swift_function(procs, smlt_bin, event(cluster, "mixed", 2))
            job.wait_version(4, timeout=30)
            time.sleep(0.5)
            assert [job.version(i) for i in range(2)] == [4, 4], "a worker passed the hold"
            job.shard(0).delete(keys.hold("mixed"))
            code, err = finish(py_proc)
            assert code == 0, err
            code, err = finish(swift_proc)
            assert code == 0, err
        finally:
            thread.join(60)
            inproc.close()
        assert codes == {"w0": 0}
        assert_matches_reference(job, workers, steps, x, y)
        home = job.shard(0)
        metrics = [json.loads(f[b"m"]) for _, f in home.xrange(keys.metrics("mixed"))]
        assert sorted((m["worker"], m["step"]) for m in metrics) == [(w, t) for w in range(3) for t in range(steps)]
        starts = [json.loads(s) for s in home.lrange(keys.starts("mixed"), 0, -1)]
        assert sorted(s["worker"] for s in starts) == [0, 1, 2]
        for w in range(3):
            assert json.loads(job.get_object(f"state-{w}")) == {"next_step": steps, "generation": 0}
            assert home.get(keys.lease("mixed", w)) == b"0"


def test_time_limit_exits_75_and_the_next_generation_continues(cluster, procs):
    x, y = softmax.dataset()
    # every step sleeps 0.15 s, so one 1 s generation does at most 6 steps: 13 steps need at
    # least three generations, and so at least two exits with 75, however slow the starts are
    steps = 13
    job = softmax.register(cluster, "limited", 1, steps, x, y)
    with job:
        codes = []
        for generation in range(30):
            proc = python_function(procs, event(cluster, "limited", 0, generation),
                                   SMLT_FUNCTION_TIMEOUT_MS="1000", SLOW_STEP_S="0.15")
            code, err = finish(proc)
            codes.append(code)
            assert code in (0, 75), err
            state = json.loads(job.get_object("state-0"))
            assert state["generation"] == generation
            if code == 0:
                break
        assert codes[-1] == 0 and codes.count(75) >= 2, codes
        assert state["next_step"] == steps
        starts = [json.loads(s) for s in job.shard(0).lrange(keys.starts("limited"), 0, -1)]
        assert [s["generation"] for s in starts] == list(range(len(codes)))
        assert job.shard(0).get(keys.lease("limited", 0)) == str(len(codes) - 1).encode()
        assert_matches_reference(job, 1, steps, x, y)


def half_push(cluster, job_id, x, y):
    """Worker 0 stores its step-0 gradient and counts it on the home shard only, then "dies";
    worker 1 pushes fully, so the home shard moves to version 1 and shard 1 stays at 0."""
    job = softmax.register(cluster, job_id, 2, 3, x, y)
    parts = softmax.partitions(2, x, y)
    a, b = Worker(event(cluster, job_id, 0)), Worker(event(cluster, job_id, 1))
    for w in (a, b):
        assert w.control(0, 5) is not None
    pa, pb = a.pull(0, 5), b.pull(0, 5)
    layout = job.map.layout
    from smlt.tensors import flatten, unflatten
    ga = flatten(softmax.gradient(unflatten(pa.params, layout), *parts[0], 0).gradients, layout)
    gb = flatten(softmax.gradient(unflatten(pb.params, layout), *parts[1], 0).gradients, layout)
    a._store(ga, 0)
    a._announce(0, 0)
    b.push(gb, 0)
    b.save_progress(1)
    a.close()
    deadline = time.monotonic() + 10
    while job.version(0) != 1:
        assert time.monotonic() < deadline, "the home shard did not commit step 0"
        time.sleep(0.02)
    time.sleep(0.3)
    assert job.version(1) == 0
    assert all(len(job.map.chunks_of(i)) > 0 for i in range(2))
    return job, b, parts


def test_a_half_finished_push_is_completed(cluster):
    x, y = softmax.dataset()
    job, b, parts = half_push(cluster, "half", x, y)
    with job:
        again = Worker(event(cluster, "half", 0, generation=1))  # no saved progress: starts at 0
        codes = {}
        thread = threading.Thread(target=lambda: codes.update(
            b=b.run(lambda t, p: softmax.gradient(p, *parts[1], t))), daemon=True)
        thread.start()
        seen = []

        def compute(t, p):
            seen.append((t, json.loads(job.get_object("state-0"))["next_step"]))
            return softmax.gradient(p, *parts[0], t)

        try:
            codes["a"] = again.run(compute)
        finally:
            thread.join(60 if "a" in codes else 1)  # worker 1 cannot finish without worker 0
            again.close()
            b.close()
        assert codes == {"a": 0, "b": 0}
        # step 0 is not computed again, and progress 1 is saved before step 1 is pushed
        assert seen == [(1, 1), (2, 2)]
        assert_matches_reference(job, 2, 3, x, y)


def test_a_lost_half_finished_push_is_an_error(cluster):
    x, y = softmax.dataset()
    job, b, parts = half_push(cluster, "lost", x, y)
    with job:
        c = job.map.chunks_of(1)[0]
        assert job.shard(1).delete(keys.grad("lost", c, 0, 0)) == 1
        again = Worker(event(cluster, "lost", 0, generation=1))
        try:
            with pytest.raises(PushLost, match="gone from Redis"):
                again.run(lambda t, p: softmax.gradient(p, *parts[0], t))
        finally:
            again.close()
            b.close()


def test_non_finite_gradient_stops_the_job(cluster):
    x, y = softmax.dataset()
    job = softmax.register(cluster, "diverge", 1, 3, x, y)
    with job:
        w = Worker(event(cluster, "diverge", 0))
        try:
            def bad(t, p):
                r = softmax.gradient(p, x, y, t)
                r.gradients["bias"][0] = np.nan
                return r
            assert w.run(bad) == 65
        finally:
            w.close()
        failure = json.loads(job.shard(0).get(keys.failure("diverge")))
        assert failure["worker"] == "0" and "not finite" in failure["reason"]
        assert job.version(0) == 0 and job.shard(0).keys("smlt:{diverge/*}:grad:*") == []


def test_the_lease_is_renewed_while_a_step_runs(cluster):
    x, y = softmax.dataset()
    job = softmax.register(cluster, "leased", 1, 1, x, y)
    with job:
        w = Worker(event(cluster, "leased", 0, generation=4, lease_ms=300))
        key, ttls = keys.lease("leased", 0), []

        def slow(t, p):
            for _ in range(6):  # 1.2 s, four times the lease's TTL
                time.sleep(0.2)
                ttls.append(job.shard(0).pttl(key))
            return softmax.gradient(p, x, y, t)

        try:
            assert w.run(slow) == 0
        finally:
            w.close()
        assert all(0 < t <= 300 for t in ttls), ttls
        assert job.shard(0).get(key) == b"4"
        time.sleep(0.4)  # never deleted, but no longer renewed once the worker is done
        assert job.shard(0).exists(key) == 0


def test_workers_follow_a_reconfiguration_to_fewer_workers(cluster):
    """A driver (this test) holds step 3, then switches the job from 2 workers to 1 with a new
    epoch; worker 1 sees the epoch, is no longer a member and exits 0; worker 0 finishes."""
    x, y = softmax.dataset()
    steps = 6
    job = softmax.register(cluster, "shrink", 2, steps, x, y)
    with job:
        job.shard(0).set(keys.hold("shrink"), "3")
        parts = softmax.partitions(2, x, y)
        workers = [Worker(event(cluster, "shrink", w)) for w in range(2)]
        codes = {}
        threads = [threading.Thread(target=lambda w=w: codes.update(
            {w: workers[w].run(lambda t, p: softmax.gradient(p, *parts[w], t))}), daemon=True) for w in range(2)]
        for t in threads:
            t.start()
        try:
            job.wait_version(3, timeout=30)
            config = json.loads(job.shard(0).get(keys.train_key("shrink")))
            config["workers"] = 1
            new_map = json.loads(job.map.to_json())
            new_map["epoch"] = 2
            for i in (1, 0):
                job.shard(i).set(keys.train_key("shrink"), json.dumps(config))
            for i in (1, 0):  # the map and its epoch, the home shard last
                pipe = job.shard(i).pipeline(transaction=True)
                pipe.set(keys.map_key("shrink"), json.dumps(new_map))
                pipe.set(keys.epoch_key("shrink"), "2")
                pipe.execute()
            for i in (0, 1):
                job.shard(i).rpush(keys.SERVE_WAKEUP, "shrink")
                job.shard(i).expire(keys.SERVE_WAKEUP, 60)
            job.shard(0).delete(keys.hold("shrink"))
        finally:
            for t in threads:
                t.join(60)
            for w in workers:
                w.close()
        assert codes == {0: 0, 1: 0}
        job.wait_version(steps, timeout=30)
        assert json.loads(job.get_object("state-1"))["next_step"] == 3
        assert json.loads(job.get_object("state-0"))["next_step"] == steps
        assert workers[0].job.map.epoch == 2 and workers[0].job.config.workers == 1


def test_a_refused_push_is_pushed_again(procs, smlt_bin):
    """Both workers push step 0 before any server runs; worker 1's gradient chunk is then damaged
    in Redis. The server refuses it (takes worker 1 out of the pushed set), worker 1 notices while
    it waits for version 1 and pushes again, and the job ends at the reference parameters."""
    x, y = softmax.dataset()
    endpoints = [procs.redis(), procs.redis()]
    workers, steps = 2, 4
    job = softmax.register(endpoints, "refused", workers, steps, x, y)
    with job:
        parts = softmax.partitions(workers, x, y)
        runners = [Worker(event(endpoints, "refused", w, lease_ms=3000)) for w in range(workers)]
        codes = {}

        def run(w):
            px, py = parts[w]
            codes[w] = runners[w].run(lambda t, p: softmax.gradient(p, px, py, t))

        threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(workers)]
        for t in threads:
            t.start()
        try:
            chunk = 0
            shard = job.map.assignment[chunk]
            conn = job.shard(shard)
            end = time.monotonic() + 30
            while conn.scard(keys.pushed("refused", shard, 0)) < 2:
                assert time.monotonic() < end, "the workers did not push step 0"
                time.sleep(0.02)
            key = keys.grad("refused", chunk, 0, 1)
            blob = bytearray(conn.get(key))
            blob[-1] ^= 0x40
            conn.set(key, bytes(blob))
            procs.start([smlt_bin, "serve", "--redis", ",".join(endpoints)], "serve",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for t in threads:
                t.join(60)
            assert codes == {0: 0, 1: 0}
        finally:
            for r in runners:
                r.close()
        rejected = [json.loads(r) for r in conn.lrange(keys.rejected("refused"), 0, -1)]
        assert [(r["worker"], r["step"]) for r in rejected] == [(1, 0)]
        assert_matches_reference(job, workers, steps, x, y)
