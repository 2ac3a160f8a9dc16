"""Blobs between a real Swift SMLT and this package, both ways, for every codec.

Swift -> Python: `smlt train --redis` (with `smlt serve`) trains a job and keeps it (--retain);
Python reads its map, parameters and staged data and checks them against the driver's summary
(`param_digest`), the placement rules and the digits data file.
Python -> Swift: Python registers a job from named arrays; `smlt admin chunks` and
`smlt admin checkpoint` decode its blobs in Swift, and the safetensors file must hold the same bits.
Every dtype and codec, both ways, through `smlt admin blob encode/decode` (files, no Redis): the
same values give the same blob bytes (raw) or the same decoded bits, rounding included.
"""

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from smlt import Job, TrainingConfig, keys, register_job
from smlt import blob
from smlt.blob import Codec, Dtype, decode, encode, round_to
from smlt.layout import fnv1a64, place_chunks
from smlt.tensors import flatten

from conftest import REPO

CODECS = ["raw", "lz4", "shuffle-lz4", "bitshuffle-lz4"]


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


def interop_values() -> np.ndarray:
    """Gradient-like values, ties and the special values of every rounding rule, and a
    compressible stretch, so that every codec is really used."""
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFA00001, 0x7F800001, 0x00000001,
                        0x80800000, 0x477FE000, 0x477FF000, 0x47800000, 0x7F7FFFFF, 0x3F808000, 0x3F818000,
                        0x33800000, 0x33000000, 0x33000001, 0x3F801000, 0x3F803000, 0x387FF000, 0x38800000],
                       dtype="<u4").view("<f4")
    rng = np.random.default_rng(11)
    noise = rng.integers(0, 1 << 32, size=3000, dtype=np.uint64).astype("<u4").view("<f4")
    grad = (rng.standard_normal(5000) * 0.01).astype(np.float32)
    flat = (np.arange(8000) % 5 * 0.25).astype(np.float32)
    return np.concatenate([special, noise, grad, flat])


@pytest.mark.parametrize("dtype", list(Dtype))
@pytest.mark.parametrize("codec", CODECS)
def test_blob_files_both_ways(smlt_bin, tmp_path, dtype, codec):
    values = interop_values()
    (tmp_path / "in.f32").write_bytes(values.astype("<f4").tobytes())
    # Swift writes, Python reads.
    run([smlt_bin, "admin", "blob", "encode", "--input", str(tmp_path / "in.f32"), "--output",
         str(tmp_path / "swift.blob"), "--dtype", dtype.wire_name, "--codec", codec, "--step", "7", "--producer", "3"])
    swift_blob = (tmp_path / "swift.blob").read_bytes()
    b = decode(swift_blob, expected_count=values.size)
    assert (b.header.dtype, b.header.codec, b.header.step, b.header.producer) == (dtype, Codec.parse(codec), 7, 3)
    assert b.values.tobytes() == round_to(values, dtype).tobytes()
    python_blob = encode(values, codec, step=7, producer=3, dtype=dtype)
    if b.header.codec == Codec.RAW:
        assert python_blob == swift_blob  # the rounding, byte for byte
    else:
        # The same header fields; the LZ4 blocks may differ between LZ4 builds, the elements not.
        assert python_blob[:8] == swift_blob[:8] and decode(python_blob).values.tobytes() == b.values.tobytes()
    # Python writes, Swift reads.
    (tmp_path / "py.blob").write_bytes(python_blob)
    header = json.loads(run([smlt_bin, "admin", "blob", "decode", "--input", str(tmp_path / "py.blob"), "--output",
                             str(tmp_path / "out.f32")]))
    assert header == {"dtype": dtype.wire_name, "codec": b.header.codec.wire_name, "count": values.size, "step": 7,
                      "producer": 3, "payload_length": len(python_blob) - 48}
    assert (tmp_path / "out.f32").read_bytes() == round_to(values, dtype).tobytes()


def sparse_interop_values() -> np.ndarray:
    """Mostly zeros, with the special values of every rounding rule (−0 and NaN payloads too)."""
    v = np.zeros(20000, dtype=np.float32)
    special = interop_values()[:22]
    v[7:7 + 22 * 300:300] = special
    v[9000::97] = (np.random.default_rng(3).standard_normal(len(v[9000::97])) * 0.01).astype(np.float32)
    return v


@pytest.mark.parametrize("dtype", list(Dtype))
@pytest.mark.parametrize("spec", ["sparse-lz4", "topk:0.01", "topk:0.1"])
def test_sparse_blob_files_both_ways(smlt_bin, tmp_path, dtype, spec):
    """sparse-lz4 (lossless, on mostly-zero values) and top-k blobs (on a dense gradient): the
    same pairs and decoded bits from Swift and from Python, each decoding the other's."""
    if spec == "sparse-lz4":
        values = sparse_interop_values()
        python_blob = encode(values, "sparse-lz4", step=7, producer=3, dtype=dtype)
        expected = round_to(values, dtype)
    else:
        values = interop_values()[22:]
        values = values[np.isfinite(values)]
        fraction = float(spec.split(":")[1])
        python_blob = blob.encode_topk(values, fraction, step=7, producer=3, dtype=dtype)
        idx = blob.topk_indices(values, fraction)
        expected = np.zeros_like(values)
        expected[idx] = round_to(values[idx], dtype)
    (tmp_path / "in.f32").write_bytes(values.astype("<f4").tobytes())
    run([smlt_bin, "admin", "blob", "encode", "--input", str(tmp_path / "in.f32"), "--output",
         str(tmp_path / "swift.blob"), "--dtype", dtype.wire_name, "--codec", spec, "--step", "7", "--producer", "3"])
    swift_blob = (tmp_path / "swift.blob").read_bytes()
    # Swift writes, Python reads: the same header, pair count and pairs.
    b = decode(swift_blob, expected_count=values.size)
    assert (b.header.dtype, b.header.codec, b.header.step, b.header.producer) == (dtype, Codec.SPARSE_LZ4, 7, 3)
    assert b.values.tobytes() == expected.tobytes()
    assert swift_blob[:8] == python_blob[:8] and swift_blob[48:52] == python_blob[48:52]
    _, si, sv = blob.decode_sparse(swift_blob)
    _, pi, pv = blob.decode_sparse(python_blob)
    assert list(si) == list(pi) and sv.tobytes() == pv.tobytes()
    # Python writes, Swift reads.
    (tmp_path / "py.blob").write_bytes(python_blob)
    header = json.loads(run([smlt_bin, "admin", "blob", "decode", "--input", str(tmp_path / "py.blob"), "--output",
                             str(tmp_path / "out.f32")]))
    assert header == {"dtype": dtype.wire_name, "codec": "sparse-lz4", "count": values.size, "step": 7,
                      "producer": 3, "payload_length": len(python_blob) - 48}
    assert (tmp_path / "out.f32").read_bytes() == expected.tobytes()


def test_swift_refuses_sparse_blobs_python_refuses(smlt_bin, tmp_path):
    """An index out of range behind a valid checksum: both decoders name it."""
    good = blob.encode_sparse(1000, [3, 500, 999], np.array([1, 2, 3], np.float32))
    bad = blob.encode_sparse(2000, [3, 500, 1999], np.array([1, 2, 3], np.float32))
    bad = bytearray(bad)
    bad[8:16] = struct.pack("<Q", 1000)
    bad[40:44] = struct.pack("<I", blob._crc(bytes(bad[:40]), bytes(bad[48:])))
    with pytest.raises(blob.InvalidIndex, match="index 1999 is out of range for 1000 elements"):
        decode(bytes(bad))
    (tmp_path / "good.blob").write_bytes(good)
    run([smlt_bin, "admin", "blob", "decode", "--input", str(tmp_path / "good.blob")])
    (tmp_path / "bad.blob").write_bytes(bad)
    r = subprocess.run([smlt_bin, "admin", "blob", "decode", "--input", str(tmp_path / "bad.blob")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "index 1999 is out of range for 1000 elements" in r.stderr


def test_swift_rejects_what_python_rejects(smlt_bin, tmp_path):
    data = bytearray(encode(interop_values(), "raw", dtype="bf16"))
    data[100] ^= 1
    (tmp_path / "bad.blob").write_bytes(data)
    r = subprocess.run([smlt_bin, "admin", "blob", "decode", "--input", str(tmp_path / "bad.blob")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "checksum" in r.stderr
