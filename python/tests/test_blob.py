"""The blob codec on its own: round trips, the raw fallback, and rejection of damaged blobs."""

import struct

import crc32c
import lz4.block
import numpy as np
import pytest

from smlt import blob
from smlt.blob import Codec, decode, encode

CODECS = list(Codec)


def compressible(n=1000):
    return (np.arange(n, dtype=np.float32) % 7) * np.float32(0.25)


def restamp(b: bytearray) -> bytes:
    """Recompute the checksum after editing a blob (to reach checks after the checksum)."""
    b[40:44] = struct.pack("<I", crc32c.crc32c(bytes(b[48:]), value=crc32c.crc32c(bytes(b[:40]))))
    return bytes(b)


def test_crc32c_check_value():
    assert crc32c.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_is_bit_exact(codec):
    values = compressible()
    values[3] = np.float32(-0.0)
    values[5] = np.float32(np.inf)
    values[6] = np.frombuffer(struct.pack("<I", 0x7FC00001), dtype=np.float32)[0]  # a NaN payload
    data = encode(values, codec, step=7, producer=3)
    b = decode(data, expected_count=values.size)
    assert b.header.codec == codec
    assert (b.header.step, b.header.producer, b.header.count) == (7, 3, values.size)
    assert b.values.tobytes() == values.tobytes()


def test_header_layout():
    data = encode(np.ones(4, np.float32), "raw", step=9, producer=blob.PRODUCER_SERVER)
    assert data[:8] == b"SMLT\x01\x00\x00\x00"
    assert struct.unpack_from("<QQII Q", data, 8) == (4, 9, 0xFFFFFFFF, 0, 16)
    assert data[44:48] == b"\0\0\0\0" and len(data) == 48 + 16


def test_shuffle_layout():
    values = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    raw = values.tobytes()
    expected = bytes(raw[i * 4 + j] for j in range(4) for i in range(3))
    assert blob._shuffle(raw, 3) == expected
    assert blob._unshuffle(expected, 3) == raw


@pytest.mark.parametrize("codec", [Codec.LZ4, Codec.SHUFFLE_LZ4])
def test_incompressible_is_stored_raw(codec):
    values = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    b = decode(encode(values, codec))
    assert b.header.codec == Codec.RAW
    assert b.values.tobytes() == values.tobytes()
    assert decode(encode(np.zeros(0, np.float32), codec)).header.codec == Codec.RAW


def test_compressed_payload_is_smaller():
    data = encode(compressible(), "shuffle-lz4")
    assert data[6] == 2 and len(data) - 48 < 4000


def test_refuses_inexact_cast():
    with pytest.raises(ValueError, match="float32"):
        encode(np.array([0.1], dtype=np.float64))


# --- damaged blobs -------------------------------------------------------------------------


def good(codec=Codec.LZ4) -> bytearray:
    return bytearray(encode(compressible(), codec, step=1, producer=2))


def test_truncated_header():
    with pytest.raises(blob.TruncatedBlob, match="shorter than its 48-byte header"):
        decode(bytes(good()[:47]))
    with pytest.raises(blob.TruncatedBlob):
        decode(b"")


def test_truncated_payload():
    with pytest.raises(blob.BadLength, match="payload length field"):
        decode(bytes(good()[:-1]))


def test_extra_bytes():
    with pytest.raises(blob.BadLength, match="payload length field"):
        decode(bytes(good()) + b"\0")


@pytest.mark.parametrize("offset,value,match", [
    (0, ord("X"), "bad magic"),
    (4, 2, "format version 2"),
    (5, 3, "dtype byte 3"),
    (6, 3, "codec byte 3"),
    (7, 1, "flags byte"),
    (29, 1, "reserved bytes 28-31"),
    (46, 1, "reserved bytes 44-47"),
])
def test_bad_header_bytes(offset, value, match):
    b = good()
    b[offset] = value
    with pytest.raises(blob.BadHeader, match=match):
        decode(bytes(b))


def test_oversize_count_checked_from_header_alone():
    b = good()[:48]
    b[8:16] = struct.pack("<Q", (1 << 28) + 1)
    with pytest.raises(blob.BlobTooLarge, match="268435457 elements"):
        decode(bytes(b))
    with pytest.raises(blob.BlobTooLarge):
        blob.parse_header(bytes(good()), max_count=999)


def test_expected_count():
    with pytest.raises(blob.CountMismatch, match="holds 1000 elements, expected 999"):
        decode(bytes(good()), expected_count=999)


def test_raw_length_must_match_count():
    b = bytearray(encode(np.ones(4, np.float32), "raw"))
    b[8:16] = struct.pack("<Q", 5)
    with pytest.raises(blob.BadLength, match="raw payload is 16 bytes, expected 20"):
        decode(restamp(b))


def test_compressed_payload_not_smaller():
    raw = bytearray(encode(np.ones(4, np.float32), "raw"))
    raw[6] = 1  # claims lz4 with a 16-byte payload for 16 raw bytes
    with pytest.raises(blob.BadLength, match="smaller than the 16 raw bytes"):
        decode(restamp(raw))
    empty = bytearray(encode(np.zeros(0, np.float32), "raw"))
    empty[6] = 2
    with pytest.raises(blob.BadLength, match="non-empty"):
        decode(restamp(empty))


def test_reserved_dtype():
    b = good()
    b[5] = 1
    with pytest.raises(blob.UnsupportedDtype, match="f16"):
        decode(restamp(b))


def test_flipped_payload_bit():
    b = good()
    b[60] ^= 0x10
    with pytest.raises(blob.ChecksumMismatch, match="does not match"):
        decode(bytes(b))


def test_wrong_checksum():
    b = good()
    b[40:44] = b"\x01\x02\x03\x04"
    with pytest.raises(blob.ChecksumMismatch, match="0x04030201"):
        decode(bytes(b))


@pytest.mark.parametrize("codec", CODECS)
def test_every_single_bit_flip_is_detected(codec):
    data = bytes(encode(compressible(40), codec, step=3, producer=1))
    for bit in range(len(data) * 8):
        b = bytearray(data)
        b[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(blob.BlobError):
            decode(bytes(b), expected_count=40)


def test_corrupt_lz4_block_with_valid_checksum():
    values = compressible()
    whole = lz4.block.compress(values.tobytes(), store_size=False)
    payload = whole[: len(whole) // 2]  # a block cut in half: not a valid LZ4 block
    head = bytearray(struct.pack("<4sBBBBQQIIQ", b"SMLT", 1, 0, 1, 0, values.size, 0, 0, 0, len(payload)))
    with pytest.raises(blob.CorruptPayload, match="LZ4 block"):
        decode(restamp(head + b"\0" * 8 + payload))


def test_lz4_block_of_wrong_size():
    values = compressible()
    payload = lz4.block.compress(values[:-1].tobytes(), store_size=False)  # 4 bytes short
    head = bytearray(struct.pack("<4sBBBBQQIIQ", b"SMLT", 1, 0, 1, 0, values.size, 0, 0, 0, len(payload)))
    with pytest.raises(blob.CorruptPayload, match="4000"):
        decode(restamp(head + b"\0" * 8 + payload))
