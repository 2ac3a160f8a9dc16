"""Python workers on jobs whose shards are lanes of a real Redis Cluster (3 masters, 3 replicas,
with a password; `smlt serve` on the whole cluster): the `{TAG}` key prefix as a raw cluster
client sees it, WAIT for the replica, MOVED and ASK, the trust rule for lanes, `smlt train` with
Python function workers on the cluster (same param_digest as on independent shards), Python and
Swift workers on one cluster job, and the errors for bad input."""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

import softmax
from conftest import REPO, Processes, _free_port
from smlt import FunctionEvent, Job, TrainingConfig, Worker, keys
from smlt.client import UntrustedEndpoint, connect
from smlt.lanes import LaneError, LaneRedis, prefix_arguments, slot_map, strip_reply
from smlt.layout import ClusterEndpoint, ShardMap, SpecError, TensorSpec, parse_endpoint
from test_worker_job import assert_matches_reference

PASSWORD = f"cluster-{uuid.uuid4().hex[:12]}"


class Cluster:
    """A running local Redis Cluster: its node endpoints and a raw cluster client."""

    def __init__(self, nodes: list[str], processes: dict[str, subprocess.Popen]):
        self.nodes = nodes
        self.processes = processes
        self.seed = f"cluster://{nodes[0]}"

    def lane(self, tag: str) -> str:
        return f"{self.seed}/{tag}"

    def raw(self) -> RedisCluster:
        return RedisCluster(startup_nodes=[ClusterNode(*n.rsplit(":", 1)) for n in self.nodes], password=PASSWORD)

    def plain(self, node) -> redis.Redis:
        return redis.Redis(host=node[0], port=node[1], password=PASSWORD)

    def masters(self) -> list[tuple[str, int]]:
        host, port = self.nodes[0].rsplit(":", 1)
        return sorted({m for _, _, m, _ in slot_map((host, int(port)), PASSWORD)})

    def master_of(self, tag: str) -> tuple[str, int]:
        host, port = self.nodes[0].rsplit(":", 1)
        slot = key_slot(f"{{{tag}}}".encode())
        return next(m for lo, hi, m, _ in slot_map((host, int(port)), PASSWORD) if lo <= slot <= hi)

    def tags_on_masters(self, count: int) -> list[str]:
        """`smlt-N` tags (as SMLT names the lanes it chooses) on different masters."""
        chosen, seen = [], set()
        for n in range(64):
            m = self.master_of(f"smlt-{n}")
            if m not in seen:
                seen.add(m)
                chosen.append(f"smlt-{n}")
            if len(chosen) == count:
                return chosen
        raise AssertionError("no tags on enough masters")


def _start_cluster(procs: Processes, directory: str) -> Cluster:
    ports = []
    while len(ports) < 6:
        p = _free_port()
        if p not in ports and p + 10000 < 65536:
            ports.append(p)
    processes = {}
    for p in ports:
        processes[f"127.0.0.1:{p}"] = procs.start(["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", f"{directory}/nodes-{p}.conf", "--cluster-node-timeout", "1000",
                     "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", directory,
                     "--loglevel", "warning", "--requirepass", PASSWORD, "--masterauth", PASSWORD],
                    "redis", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conns = [redis.Redis(host="127.0.0.1", port=p, password=PASSWORD, socket_timeout=2) for p in ports]
    for c in conns:
        for _ in range(250):
            try:
                c.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
    nodes = [f"127.0.0.1:{p}" for p in ports]
    subprocess.run(["redis-cli", "-a", PASSWORD, "--no-auth-warning", "--cluster", "create", *nodes,
                    "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 60
    while True:
        ok = all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in conns)
        roles = [c.execute_command("ROLE") for c in conns]
        replicated = all(len(r[2]) == 1 for r in roles if r[0] == b"master") and \
            sum(r[0] == b"master" for r in roles) == 3 and all(r[3] == b"connected" for r in roles if r[0] == b"slave")
        # Every node's slot map lists every range's replica (gossip lags behind replication).
        mapped = ok and all(len(m) == 3 and all(len(e) == 4 for e in m)
                            for m in (c.execute_command("CLUSTER", "SLOTS") for c in conns))
        if ok and replicated and mapped:
            break
        assert time.monotonic() < deadline, "the cluster did not become healthy"
        time.sleep(0.1)
    for c in conns:
        c.close()
    return Cluster(nodes, processes)


@pytest.fixture(scope="module")
def cluster(smlt_bin):
    """A 3+3 Redis Cluster with a password and `smlt serve` for the whole cluster."""
    procs = Processes()
    directory = tempfile.mkdtemp(prefix="smlt-pycluster-")
    try:
        c = _start_cluster(procs, directory)
        procs.start([smlt_bin, "serve", "--redis", c.seed], "serve", env={**os.environ, "SMLT_REDIS_PASSWORD": PASSWORD},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield c
    finally:
        procs.stop_all()
        subprocess.run(["rm", "-rf", directory])


# The key prefix, WAIT, redirects ---------------------------------------------------------------

def test_lane_keys_carry_the_tag_on_the_lanes_master(cluster):
    tag = f"py-{uuid.uuid4().hex[:6]}"
    lane = connect(cluster.lane(tag), PASSWORD)
    raw = cluster.raw()
    try:
        assert isinstance(lane, LaneRedis)
        lane.set("smlt:{j}:map", b"m")
        pipe = lane.pipeline(transaction=True)
        pipe.set("a", "1").sadd("s", "x").rpush("l", "v")
        assert pipe.execute() == [True, 1, 1]
        pipe = lane.pipeline(transaction=False)
        pipe.get("a").smembers("s").exists("a", "s", "l", "nothing")
        assert pipe.execute() == [b"1", {b"x"}, 3]
        lane.xadd("stream", {"version": "3"}, id="3-1")
        # The raw cluster client finds every key under {TAG}, in the lane's one slot.
        assert raw.get(f"{{{tag}}}smlt:{{j}}:map") == b"m"
        assert raw.get(f"{{{tag}}}a") == b"1" and raw.lrange(f"{{{tag}}}l", 0, -1) == [b"v"]
        assert raw.get("a") is None and raw.get("smlt:{j}:map") is None
        assert {raw.keyslot(f"{{{tag}}}{k}") for k in ("a", "s", "l", "stream")} == {key_slot(f"{{{tag}}}".encode())}
        master = cluster.master_of(tag)
        assert lane.lane.master == master
        assert cluster.plain(master).get(f"{{{tag}}}a") == b"1"
        # Replies that name keys lose the prefix.
        got = lane.xread({"stream": "0-0"}, count=1)
        assert got[0][0] == b"stream" and got[0][1][0][1] == {b"version": b"3"}
        assert lane.blpop(["l"], timeout=1) == (b"l", b"v")
        assert sorted(lane.scan(0, count=1000)[1]) == sorted([b"smlt:{j}:map", b"a", b"s", b"stream"])
        assert lane.delete("nothing") == 0
        # A command outside the table is refused, not sent with a key outside the lane.
        with pytest.raises(LaneError, match="KEYS is not supported on a cluster lane"):
            lane.keys("*")
        # Every write is waited for (WAIT on the master, on the same connection, after it), reads
        # are not: the last command of the lane's connection, as the master sees it.
        stats = cluster.plain(master)
        client = lane.client_id()

        def last_command():
            return stats.execute_command("CLIENT", "LIST", "ID", client).decode().split(" cmd=")[1].split()[0]

        lane.set("b", "2")
        assert last_command() == "wait"
        lane.get("b")
        assert last_command() == "get"
        lane.pipeline(transaction=False).get("a").get("b").execute()
        assert last_command() == "get"
        lane.pipeline(transaction=False).get("a").expire("b", 100).execute()
        assert last_command() == "wait"
        lane.pipeline(transaction=True).get("a").execute()  # EXEC counts as a write
        assert last_command() == "wait"
        assert lane.client_id() == client  # all of it on one connection
        stats.close()
        # The master's replica has what was written.
        replica = next(r for _, _, m, rs in slot_map(master, PASSWORD) if m == master for r in rs)
        conn = cluster.plain(replica)
        conn.execute_command("READONLY")
        assert conn.get(f"{{{tag}}}a") == b"1" and conn.exists(f"{{{tag}}}stream") == 1
        conn.close()
    finally:
        lane.close()
        raw.close()


def test_moved_is_followed_and_ask_is_asked(cluster):
    tag = f"py-{uuid.uuid4().hex[:6]}"
    master = cluster.master_of(tag)
    other = next(m for m in cluster.masters() if m != master)
    lane = connect(cluster.lane(tag), PASSWORD)
    try:
        lane.set("k", "v")
        # MOVED: the lane believes another master serves its slot.
        lane.lane.master = other
        lane.connection_pool.disconnect()
        assert lane.get("k") == b"v"
        assert lane.lane.master == master
        pipe = lane.pipeline(transaction=True)
        lane.lane.master = other
        lane.connection_pool.disconnect()
        assert pipe.set("k", "w").get("k").execute() == [True, b"w"]
        # ASK: the slot is migrating from its master to `other`; a key the source lacks is asked
        # for on the target.
        slot = key_slot(f"{{{tag}}}".encode())
        src, dst = cluster.plain(master), cluster.plain(other)
        src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        try:
            assert lane.get("k") == b"w"  # still on the source
            assert lane.set("new", "n") is True  # ASK: written on the target
            pipe = lane.pipeline(transaction=False)
            assert pipe.get("k").get("new").set("new2", "m").execute() == [b"w", b"n", True]
            assert lane.lane.master == master
            assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1  # "k" alone
            dst.execute_command("ASKING")
            assert dst.get(f"{{{tag}}}new") == b"n"
            dst.execute_command("ASKING")
            assert dst.delete(f"{{{tag}}}new", f"{{{tag}}}new2") == 2
        finally:
            for c in (dst, src):
                c.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            src.close()
            dst.close()
    finally:
        lane.close()


@pytest.mark.parametrize("command, sent", [
    (["GET", "k"], ("GET", "{t}k")),
    ([b"SET", b"k", b"v", "EX", 5], (b"SET", b"{t}k", b"v", "EX", 5)),
    (["MGET", "a", "b"], ("MGET", "{t}a", "{t}b")),
    (["BLPOP", "a", "b", 1], ("BLPOP", "{t}a", "{t}b", 1)),
    (["XREAD", "COUNT", 1, "BLOCK", 5, "STREAMS", "a", "b", "1-0", "2-0"],
     ("XREAD", "COUNT", 1, "BLOCK", 5, "STREAMS", "{t}a", "{t}b", "1-0", "2-0")),
    (["SCAN", 0], ("SCAN", 0, "MATCH", "{t}*")),
    (["SCAN", 0, "MATCH", "smlt:*"], ("SCAN", 0, "MATCH", "{t}smlt:*")),
    (["MEMORY USAGE", "k"], ("MEMORY", "USAGE", "{t}k")),
    (["CLUSTER SLOTS"], ("CLUSTER", "SLOTS")),
    (["WAIT", 1, 2000], ("WAIT", 1, 2000)),
])
def test_the_key_table_prefixes_keys_only(command, sent):
    assert prefix_arguments(command, "{t}") == sent


def test_replies_lose_the_prefix_and_unknown_commands_are_refused():
    assert strip_reply("XREAD", [[b"{t}a", [(b"1-1", {b"v": b"1"})]]], "{t}") == [[b"a", [(b"1-1", {b"v": b"1"})]]]
    assert strip_reply("XREAD", {b"{t}a": [[]]}, "{t}") == {b"a": [[]]}
    assert strip_reply("BLPOP", (b"{t}l", b"x"), "{t}") == (b"l", b"x")
    assert strip_reply("SCAN", (0, [b"{t}a", "{t}b"]), "{t}") == (0, [b"a", "b"])
    assert strip_reply("GET", b"{t}a", "{t}") == b"{t}a"
    for name in ("KEYS", "EVAL", "FLUSHALL", "RENAME"):
        with pytest.raises(LaneError, match=f"{name} is not supported on a cluster lane"):
            prefix_arguments([name, "x"], "{t}")


# Bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["cluster://127.0.0.1:7000/", "cluster://127.0.0.1:7000/a$b",
                                  "cluster://127.0.0.1:7000/a/b", "cluster://127.0.0.1:7000/" + "x" * 65,
                                  "cluster://127.0.0.1:7000/{x}"])
def test_bad_lane_tags_are_refused(text):
    with pytest.raises(SpecError, match="lane tag is 1 to 64 characters"):
        parse_endpoint(text)


@pytest.mark.parametrize("text", ["cluster:///t", "cluster://unix:/tmp/s/t", "cluster://127.0.0.1:7000,/t",
                                  "cluster://127.0.0.1/t"])
def test_bad_cluster_seeds_are_refused(text):
    with pytest.raises(SpecError):
        parse_endpoint(text)


def test_lane_names_parse_and_maps_take_lanes():
    lane = parse_endpoint("cluster://127.0.0.1:7000,[::1]:7001/smlt-0.a_B")
    assert lane == ClusterEndpoint((("127.0.0.1", 7000), ("::1", 7001)), "smlt-0.a_B")
    assert str(lane) == "cluster://127.0.0.1:7000,[::1]:7001/smlt-0.a_B"
    assert parse_endpoint("cluster://h:1").tag is None
    tensors = [TensorSpec("w", (10,))]
    m = ShardMap.create("j", ["cluster://h:1/smlt-0", "cluster://h:1/smlt-1", "127.0.0.1:6379"], tensors, 2)
    assert ShardMap.from_json(m.to_json()) == m
    with pytest.raises(SpecError, match="whole cluster"):
        ShardMap.create("j", ["cluster://h:1"], tensors, 2)
    with pytest.raises(SpecError, match="lane twice"):
        ShardMap.create("j", ["cluster://h:1/smlt-0", "cluster://h:2/smlt-0"], tensors, 2)
    with pytest.raises(SpecError, match="whole Redis Cluster"):
        connect("cluster://h:1")


def test_a_server_not_in_cluster_mode_is_named(procs):
    plain = procs.redis()
    lane = connect(f"cluster://{plain}/smlt-0")
    with pytest.raises(LaneError, match=f"{plain} is not in cluster mode"):
        lane.get("x")
    with pytest.raises(LaneError, match=f"{plain} is not in cluster mode"):
        Job.open([f"cluster://{plain}"], "job")


def test_lanes_are_trusted_by_their_seeds(cluster):
    """With a password, a lane is trusted when each of its seeds was given, or is a node of a
    given cluster (CLUSTER SLOTS); a lane through any other node is refused before connecting."""
    tensors = [TensorSpec("w", (4,))]
    config = TrainingConfig(1, 1, 0.1)
    all_nodes = ",".join(cluster.nodes)
    mine = ShardMap.create("t", [f"cluster://{all_nodes}/smlt-0"], tensors, 2)
    Job(mine, config, PASSWORD, allowed=[cluster.seed]).close()  # the other nodes: from CLUSTER SLOTS
    Job(mine, config, PASSWORD, allowed=[f"cluster://{all_nodes}/smlt-9"]).close()
    foreign = ShardMap.create("t", [f"cluster://{cluster.nodes[0]},10.1.2.3:7000/smlt-0"], tensors, 2)
    with pytest.raises(UntrustedEndpoint, match="10.1.2.3:7000"):
        Job(foreign, config, PASSWORD, allowed=[cluster.seed])
    Job(foreign, config, None, allowed=[cluster.seed]).close()  # no password: nothing to protect


# Jobs ------------------------------------------------------------------------------------------------

def train(smlt_bin, *args, timeout=300):
    env = {**os.environ, "SMLT_DATA_DIR": str(REPO / "data"), "SMLT_REDIS_PASSWORD": PASSWORD}
    proc = subprocess.run([smlt_bin, "train", "--dataset", "digits", "--workers", "2", "--steps", "40", "--json",
                           *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_python_functions_train_a_cluster_job_to_the_digest_of_independent_shards(cluster, smlt_bin):
    """`smlt train --redis cluster://SEED --model function` with tests/np_function.py: the describe
    phase, the workers and the evaluate phase all run in Python on the job's lanes; the result is
    bit for bit the run on shards of its own (and the built-in softmax's)."""
    function = f"{sys.executable} {REPO / 'python' / 'tests' / 'np_function.py'}"
    job = f"pycl-{uuid.uuid4().hex[:8]}"
    on_cluster = train(smlt_bin, "--redis", cluster.seed, "--job", job, "--model", "function",
                       "--function", function, "--lr", "0.5", "--retain", "1h")
    assert on_cluster["shards"] == 3 and on_cluster["steps"] == 40
    independent = train(smlt_bin, "--model", "function", "--function", function, "--lr", "0.5")
    assert on_cluster["param_digest"] == independent["param_digest"]
    assert on_cluster["test_accuracy"] == independent["test_accuracy"]
    # The job, opened through the whole cluster with the password: its lanes, one per master.
    with Job.open([cluster.seed], job, PASSWORD) as j:
        lanes = [parse_endpoint(s) for s in j.map.shards]
        assert all(isinstance(l, ClusterEndpoint) and l.tag.startswith("smlt-") for l in lanes)
        assert {cluster.master_of(l.tag) for l in lanes} == set(cluster.masters())
        version, params = j.read_parameters()
        assert version == 40 and params["weight"].shape == (64, 10)
        starts = j.shard(0).lrange(keys.starts(job), 0, -1)
        assert sorted(json.loads(s)["worker"] for s in starts) == [0, 1]
    raw = cluster.raw()
    try:
        home = parse_endpoint(j.map.shards[0]).tag
        assert raw.exists(f"{{{home}}}{keys.map_key(job)}") == 1 and raw.exists(keys.map_key(job)) == 0
    finally:
        raw.close()


def test_python_and_swift_workers_train_one_cluster_job(cluster, procs, smlt_bin):
    """A job registered by Python on two lanes (recorded in smlt:lanes, so `smlt serve` on the
    whole cluster serves them): worker 0 is Python in this process, worker 1 a Swift `smlt worker`;
    the result is the f32 reference of the same BSP run."""
    x, y = softmax.dataset()
    workers, steps = 2, 8
    lanes = [cluster.lane(t) for t in cluster.tags_on_masters(2)]
    job_id = f"pymix-{uuid.uuid4().hex[:6]}"
    job = softmax.register(lanes, job_id, workers, steps, x, y, password=PASSWORD)
    with job:
        px, py = softmax.partitions(workers, x, y)[0]
        ev = [FunctionEvent(job_id, w, 0, 3000, tuple(lanes)) for w in range(workers)]
        swift = procs.start([smlt_bin, "worker"], "worker",
                            env={**os.environ, "SMLT_FUNCTION_EVENT": ev[1].to_json(), "SMLT_REDIS_PASSWORD": PASSWORD},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        w0 = Worker(ev[0], PASSWORD)
        try:
            assert w0.run(lambda t, p: softmax.gradient(p, px, py, t)) == 0
        finally:
            w0.close()
        _, err = swift.communicate(timeout=60)
        assert swift.returncode == 0, err
        assert_matches_reference(job, workers, steps, x, y)
        metrics = [json.loads(f[b"m"]) for _, f in job.shard(0).xrange(keys.metrics(job_id))]
        assert sorted((m["worker"], m["step"]) for m in metrics) == [(w, t) for w in range(2) for t in range(steps)]


def test_a_lane_goes_on_through_its_masters_failover(cluster):
    """Last in this module (it leaves a master without its replica): the lane's master is killed;
    the replica takes over within the cluster's node timeout and the lane's commands, pipelines
    and a worker-style push go on there, with every write made before the kill still there."""
    tag = f"py-{uuid.uuid4().hex[:6]}"
    lane = connect(cluster.lane(tag), PASSWORD)
    try:
        for i in range(20):
            lane.set(f"k{i}", str(i))
        lane.xadd("versions", {"version": "0"}, id="0-1")
        master = cluster.master_of(tag)
        process = cluster.processes[f"{master[0]}:{master[1]}"]
        process.kill()
        process.wait()
        started = time.monotonic()
        assert lane.get("k19") == b"19"  # waits for the failover
        assert time.monotonic() - started < 25
        assert lane.lane.master != master
        assert lane.mget(*[f"k{i}" for i in range(20)]) == [str(i).encode() for i in range(20)]
        pipe = lane.pipeline(transaction=False)
        pipe.sadd("pushed", "0").expire("pushed", 3600).rpush("inbox", "0:0").ltrim("inbox", -1000, -1)
        assert pipe.execute() == [1, True, 1, True]
        assert lane.xread({"versions": "0-0"}, count=1)[0][0] == b"versions"
        raw = cluster.raw()
        assert raw.smembers(f"{{{tag}}}pushed") == {b"0"}
        raw.close()
    finally:
        lane.close()
