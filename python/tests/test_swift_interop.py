"""Blobs between a real Swift SMLT and this package, both ways, for every codec.

Swift -> Python: `smlt train --redis` (with `smlt serve`) trains a job and keeps it (--retain);
Python reads its map, parameters and staged data and checks them against the driver's summary
(`param_digest`), the placement rules and the digits data file.
Python -> Swift: Python registers a job from named arrays; `smlt admin chunks` and
`smlt admin checkpoint` decode its blobs in Swift, and the safetensors file must hold the same bits.
"""

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from smlt import Job, TrainingConfig, keys, register_job
from smlt.blob import Codec, decode, encode
from smlt.layout import fnv1a64, place_chunks
from smlt.tensors import flatten

from conftest import REPO

CODECS = ["raw", "lz4", "shuffle-lz4"]


def run(args, timeout=120):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}:\n{r.stderr[-2000:]}"
    return r.stdout


def digits_partition(worker, workers):
    """The digits training partition of `worker` as the built-in workloads stage it."""
    lines = (REPO / "data" / "digits" / "train.libsvm").read_text().split("\n")
    rows = [l.split() for l in lines if l.strip()]
    mine = rows[worker::workers]
    x = np.zeros((len(mine), 64), dtype=np.float32)
    for r, row in enumerate(mine):
        for item in row[1:]:
            i, v = item.split(":")
            x[r, int(i) - 1] = np.float32(v) / np.float32(16)
    y = np.array([float(row[0]) for row in mine], dtype=np.float32)
    return x, y


@pytest.mark.parametrize("codec", CODECS)
def test_swift_writes_python_reads(cluster, smlt_bin, codec):
    job = f"swift-{codec}"
    summary = json.loads(run([smlt_bin, "train", "--dataset", "digits", "--model", "softmax", "--workers", "2",
                              "--steps", "5", "--codec", codec, "--chunk-elements", "128", "--redis",
                              ",".join(cluster), "--job", job, "--retain", "1h", "--json"]))
    with Job.open(cluster, job) as j:
        m = j.map
        assert m.codec == Codec.parse(codec) and m.layout.total == 650 == summary["parameters"]
        assert list(m.assignment) == place_chunks(job, list(m.shards), m.layout.num_chunks)
        version, named = j.read_parameters()
        assert version == 5 and set(named) == {"weight", "bias"}
        flat = flatten(named, m.layout)
        assert f"{fnv1a64(flat.astype('<f4').tobytes()):016x}" == summary["param_digest"]
        # Each chunk re-encoded by Python is the same blob, byte for byte (or at least the same
        # header and elements when the LZ4 libraries' outputs differ).
        used = set()
        for c in range(m.layout.num_chunks):
            stored = j.shard(m.assignment[c]).get(keys.params(job, c))
            b = decode(stored)
            used.add(b.header.codec)
            assert (b.header.step, b.header.producer) == (5, 0xFFFFFFFF)
            again = encode(b.values, codec, b.header.step, b.header.producer)
            if b.header.codec == Codec.RAW:
                assert again == stored
            else:
                assert again[:8] == stored[:8] and decode(again).values.tobytes() == b.values.tobytes()
        assert Codec.parse(codec) in used  # the requested codec was really exercised
        # The staged data (lz4) lives where the named-object rule says, and holds digits / 16.
        for w in range(2):
            x, y = digits_partition(w, 2)
            for suffix, want in (("x", x), ("y", y)):
                name = f"data-2-{w}-{suffix}"
                owner = j.object_shard(name)
                assert [j.shard(i).exists(keys.obj(job, name)) for i in range(2)] == [i == owner for i in range(2)]
                b = decode(j.get_object(name))
                assert b.header.codec == Codec.LZ4 and (b.header.step, b.header.producer) == (0, 0)
                assert b.values.tobytes() == want.reshape(-1).tobytes()
        for w in range(2):
            assert json.loads(j.get_object(f"state-{w}"))["next_step"] == 5


def read_safetensors(path: Path):
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32"
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return header.get("__metadata__", {}), tensors


@pytest.mark.parametrize("codec", CODECS)
def test_python_writes_swift_reads(cluster, smlt_bin, codec, tmp_path):
    job = f"py-{codec}"
    rng = np.random.default_rng(7)
    params = {
        # compressible (repeated values, zeros) so that the compressed codecs are really used
        "embedding": (rng.integers(0, 5, size=(40, 16)) * 0.125).astype(np.float32),
        "scale": np.full(33, -1.5, dtype=np.float32),
        "noise": rng.standard_normal(17).astype(np.float32),  # incompressible: a raw chunk
    }
    params["scale"][0] = np.float32(-0.0)
    config = TrainingConfig(workers=1, steps=0, learning_rate=0.1)
    register_job(cluster, job, params, config, chunk_elements=100, codec=codec).close()
    chunks = json.loads(run([smlt_bin, "admin", "chunks", "--redis", ",".join(cluster), "--job", job, "--json"]))
    assert len(chunks) == 7 and all(c["version"] == 0 for c in chunks)
    assert codec in {c["codec"] for c in chunks}
    run([smlt_bin, "admin", "checkpoint", "--redis", ",".join(cluster), "--job", job, "--dir", str(tmp_path)])
    meta, tensors = read_safetensors(tmp_path / "step-00000000.safetensors")
    assert meta["format"] == "smlt-checkpoint/1" and meta["step"] == "0" and meta["tensors"] == "embedding,scale,noise"
    assert set(tensors) == set(params)
    for name, value in params.items():
        assert tensors[name].shape == value.shape
        assert tensors[name].tobytes() == value.tobytes(), name
