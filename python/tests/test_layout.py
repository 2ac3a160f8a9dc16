"""Keys, placement, the shard map, the training config and named tensors (no Redis needed)."""

import json

import numpy as np
import pytest

from smlt import keys
from smlt.blob import Codec, Dtype
from smlt.layout import (Layout, ShardMap, SpecError, TensorSpec, TrainingConfig, fnv1a64, object_shard,
                         parse_endpoint, place_chunks)
from smlt.tensors import flatten, join_chunks, split_chunks, unflatten

MAP = {"job": "digits", "epoch": 1, "shards": ["127.0.0.1:7001", "127.0.0.1:7002"], "assignment": [0],
       "tensors": [{"name": "weight", "shape": [64, 10]}, {"name": "bias", "shape": [10]}],
       "chunk_elements": 262144, "codec": "raw"}
CONFIG = {"workers": 4, "steps": 300, "learning_rate": 0.5, "momentum": 0.9, "weight_decay": 0,
          "checkpoint_every": 0, "workload": {"model": "softmax", "seed": "1"}}


def test_keys():
    assert keys.params("j", 3) == "smlt:{j/3}:params"
    assert keys.grad("j", 3, 7, 2) == "smlt:{j/3}:grad:7:2"
    assert keys.pushed("j", 1, 7) == "smlt:{j}:pushed:1:7"
    assert keys.obj("j", "state-2") == "smlt:{j}:obj:state-2"
    assert keys.moving("j") == "smlt:{j}:moving"
    with pytest.raises(ValueError, match="invalid job id"):
        keys.check_job_id("a b")


def test_fnv():
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C


def test_placement_is_bounded():
    shards = [f"127.0.0.1:{7000 + i}" for i in range(3)]
    a = place_chunks("job", shards, 10)
    assert sorted(a.count(i) for i in range(3)) == [3, 3, 4]
    assert a == place_chunks("job", shards, 10)
    assert 0 <= object_shard("job", shards, "state-0") < 3


def test_map_round_trip():
    m = ShardMap.from_json(json.dumps(MAP))
    assert m.layout.total == 650 and m.layout.num_chunks == 1 and m.chunks_of(0) == [0]
    assert ShardMap.from_json(m.to_json()) == m


@pytest.mark.parametrize("codec", ["raw", "lz4", "shuffle-lz4", "bitshuffle-lz4"])
def test_map_codecs(codec):
    m = ShardMap.from_json(json.dumps({**MAP, "codec": codec}))
    assert m.codec == Codec.parse(codec) and json.loads(m.to_json())["codec"] == codec
    assert ShardMap.from_json(m.to_json()) == m
    with pytest.raises(SpecError, match="expected raw, lz4, shuffle-lz4 or bitshuffle-lz4"):
        ShardMap.from_json(json.dumps({**MAP, "codec": "bit-shuffle-lz4"}))


def test_map_pull_encoding_may_be_bitshuffle_lz4():
    m = ShardMap.from_json(json.dumps({**MAP, "pull_encoding": "bf16-bitshuffle-lz4"}))
    assert (m.pull_encoding.dtype, m.pull_encoding.codec) == (Dtype.BF16, Codec.BITSHUFFLE_LZ4)
    assert json.loads(m.to_json())["pull_encoding"] == "bf16-bitshuffle-lz4"


@pytest.mark.parametrize("change,match", [
    ({"epoch": 0}, "'epoch'"),
    ({"epoch": True}, "'epoch'"),
    ({"shards": []}, "'shards'"),
    ({"shards": ["127.0.0.1:7001", "127.0.0.1:7001"]}, "twice"),
    ({"shards": ["localhost"]}, "host:port"),
    ({"assignment": [2]}, "not a shard index"),
    ({"assignment": [0, 0]}, "one entry per chunk"),
    ({"codec": "zstd"}, "'codec'"),
    ({"chunk_elements": 0}, "'chunk_elements'"),
    ({"tensors": []}, "non-empty"),
    ({"tensors": [{"name": "a", "shape": [2]}, {"name": "a", "shape": [2]}]}, "twice"),
    ({"tensors": [{"name": "a", "shape": [0]}]}, "shape"),
    ({"job": "x/y"}, "invalid job id"),
])
def test_map_rejects(change, match):
    with pytest.raises(SpecError, match=match):
        ShardMap.from_json(json.dumps({**MAP, **change}))
    missing = dict(MAP)
    del missing["codec"]
    with pytest.raises(SpecError, match="missing field 'codec'"):
        ShardMap.from_json(json.dumps(missing))


def test_config():
    c = TrainingConfig.from_json(json.dumps(CONFIG))
    assert (c.workers, c.steps, c.momentum, c.workload["model"]) == (4, 300, 0.9, "softmax")
    assert TrainingConfig.from_json(c.to_json()) == c
    d = TrainingConfig.from_json(json.dumps({k: CONFIG[k] for k in ("workers", "steps", "learning_rate",
                                                                       "momentum", "weight_decay")}))
    assert d.checkpoint_every == 0 and d.workload == {}


@pytest.mark.parametrize("change,match", [
    ({"workers": 0}, "'workers'"),
    ({"workers": 4097}, "'workers'"),
    ({"steps": -1}, "'steps'"),
    ({"learning_rate": "0.5"}, "'learning_rate'"),
    ({"momentum": None}, "'momentum'"),
    ({"checkpoint_every": 1.5}, "'checkpoint_every'"),
    ({"workload": {"seed": 1}}, "every value is a string"),
])
def test_config_rejects(change, match):
    with pytest.raises(SpecError, match=match):
        TrainingConfig.from_json(json.dumps({**CONFIG, **change}))
    with pytest.raises(SpecError, match="finite"):
        TrainingConfig(workers=1, steps=1, learning_rate=float("nan"))


def test_endpoints():
    assert parse_endpoint("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert parse_endpoint("[::1]:6379") == ("::1", 6379)
    assert parse_endpoint("unix:/tmp/r.sock") == "/tmp/r.sock"
    for bad in ("::1:6379", "host:0", "host: 1", "unix:rel"):
        with pytest.raises(SpecError):
            parse_endpoint(bad)


def test_named_tensors():
    layout = Layout((TensorSpec("w", (3, 2)), TensorSpec("b", (2,))), chunk_elements=3)
    named = {"w": np.arange(6, dtype=np.float32).reshape(3, 2), "b": np.array([6, 7], dtype=np.float32)}
    flat = flatten(named, layout)
    assert flat.tolist() == list(range(8))
    chunks = split_chunks(flat, layout)
    assert [c.tolist() for c in chunks] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    back = unflatten(join_chunks(chunks, layout), layout)
    assert all(np.array_equal(back[k], named[k]) for k in named)
    with pytest.raises(ValueError, match="shape"):
        flatten({"w": np.zeros((2, 3), np.float32), "b": named["b"]}, layout)
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        flatten({"w": named["w"]}, layout)
    with pytest.raises(ValueError, match="chunk 2 has 3 elements"):
        join_chunks([chunks[0], chunks[1], chunks[0]], layout)
