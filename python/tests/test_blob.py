"""The blob codec on its own: round trips, the raw fallback, and rejection of damaged blobs."""

import struct

import crc32c
import lz4.block
import numpy as np
import pytest

from smlt import blob
from smlt.blob import Codec, Dtype, decode, encode, round_to

CODECS = list(Codec)
NARROW = [Dtype.BF16, Dtype.F16]


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
    values = mostly_zeros(1000) if codec == Codec.SPARSE_LZ4 else compressible()
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
    (6, 5, "codec byte 5"),
    (6, 255, "codec byte 255"),
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


@pytest.mark.parametrize("codec", [Codec.LZ4, Codec.SHUFFLE_LZ4, Codec.BITSHUFFLE_LZ4])
def test_compressed_payload_not_smaller(codec):
    raw = bytearray(encode(np.ones(4, np.float32), "raw"))
    raw[6] = codec  # claims a compressed 16-byte payload for 16 raw bytes
    with pytest.raises(blob.BadLength, match=f"{codec.wire_name} payload is 16 bytes.*smaller than the 16 raw bytes"):
        decode(restamp(raw))
    empty = bytearray(encode(np.zeros(0, np.float32), "raw"))
    empty[6] = codec
    with pytest.raises(blob.BadLength, match="non-empty"):
        decode(restamp(empty))


def test_unknown_dtype():
    b = good()
    b[5] = 3
    with pytest.raises(blob.UnsupportedDtype, match="dtype byte 3"):
        decode(restamp(b))


# --- bf16 and f16 --------------------------------------------------------------------------


def specials() -> np.ndarray:
    bits = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFA00001, 0x00000001, 0x80800000, 0x477FE000,
            0x477FF000, 0x47800000, 0xF149F2CA, 0x7F7FFFFF, 0x3F808000, 0x3F818000, 0x33800000, 0x33000000,
            0x33000001, 0x3F801000, 0x3F803000]
    return np.array(bits, dtype="<u4").view("<f4")


def gradient(n=5000, seed=3) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.01).astype(np.float32)


def bf16_reference(x: np.ndarray) -> np.ndarray:
    """Round to nearest even by distances in float64 (exact here); past the largest finite bf16
    the next value up is 2^128."""
    b = x.view("<u4")
    lo = b & 0xFFFF0000
    up = lo + np.uint32(0x10000)
    with np.errstate(over="ignore", invalid="ignore"):  # NaN and infinite inputs are set below
        lo_v = lo.view("<f4").astype(np.float64)
        up_v = up.view("<f4").astype(np.float64)
        xv = x.astype(np.float64)
        up_v = np.where((up & 0x7FFFFFFF) == 0x7F800000, np.copysign(2.0 ** 128, xv), up_v)
        d_lo, d_up = np.abs(xv - lo_v), np.abs(up_v - xv)
    take_lo = (d_lo < d_up) | ((d_lo == d_up) & (((lo >> 16) & 1) == 0))
    r = np.where(take_lo, lo >> 16, up >> 16).astype("<u2")
    special = np.isinf(x)
    r[special] = (b[special] >> 16).astype("<u2")
    nan = np.isnan(x)
    r[nan] = ((b[nan] >> 16) | 0x40).astype("<u2")
    return r


def f16_reference(x: np.ndarray) -> np.ndarray:
    """numpy's float16 cast (round to nearest even) for numbers; the documented rule for NaNs."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = x.astype(np.float16).view("<u2").copy()
    b = x.view("<u4")
    nan = np.isnan(x)
    r[nan] = (((b[nan] >> 16) & 0x8000) | 0x7E00 | ((b[nan] >> 13) & 0x3FF)).astype("<u2")
    return r


def rounding_inputs(low_bits: int) -> np.ndarray:
    """Every high part with the low parts that decide rounding, plus random bit patterns."""
    low = 1 << low_bits
    lows = np.array([0, 1, low // 2 - 1, low // 2, low // 2 + 1, low - 1, 0x5A5A5A5A & (low - 1)], dtype=np.uint64)
    highs = np.arange(1 << (32 - low_bits), dtype=np.uint64) << low_bits
    grid = (highs[:, None] | lows[None, :]).reshape(-1).astype("<u4")
    rand = np.random.default_rng(5).integers(0, 1 << 32, size=200_000, dtype=np.uint64).astype("<u4")
    return np.concatenate([grid, rand]).view("<f4")


def test_bf16_rounding_matches_the_reference():
    x = rounding_inputs(16)
    assert np.array_equal(blob._to_bf16(x), bf16_reference(x))


def test_f16_rounding_matches_the_reference():
    x = rounding_inputs(13)
    assert np.array_equal(blob._to_f16(x), f16_reference(x))


def test_every_narrow_value_widens_exactly():
    h = np.arange(1 << 16, dtype=np.uint32).astype("<u2")
    assert np.array_equal(blob._from_bf16(h).view("<u4"), h.astype("<u4") << 16)
    widened = blob._from_f16(h).view("<u4")
    finite_or_inf = ~((h & 0x7C00 == 0x7C00) & (h & 0x3FF != 0))
    assert np.array_equal(widened[finite_or_inf], h[finite_or_inf].view("<f2").astype("<f4").view("<u4"))
    nan = h[~finite_or_inf].astype("<u4")
    assert np.array_equal(widened[~finite_or_inf], ((nan & 0x8000) << 16) | 0x7FC00000 | ((nan & 0x3FF) << 13))
    # and every non-NaN narrow value survives the way back
    bf16_number = ~((h & 0x7F80 == 0x7F80) & (h & 0x7F != 0))
    assert np.array_equal(blob._to_bf16(blob._from_bf16(h))[bf16_number], h[bf16_number])
    assert np.array_equal(blob._to_f16(blob._from_f16(h))[finite_or_inf], h[finite_or_inf])


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize("codec", CODECS)
def test_narrow_round_trip(dtype, codec):
    for values in (np.concatenate([specials(), gradient()]), compressible(), np.zeros(0, np.float32)):
        data = encode(values, codec, step=4, producer=9, dtype=dtype)
        b = decode(data, expected_count=values.size)
        assert b.header.dtype == dtype and (b.header.step, b.header.producer) == (4, 9)
        assert b.values.dtype == np.float32
        assert b.values.tobytes() == round_to(values, dtype).tobytes()
    sample = mostly_zeros() if codec == Codec.SPARSE_LZ4 else compressible()
    assert decode(encode(sample, codec, dtype=dtype)).header.codec == codec


@pytest.mark.parametrize("dtype", NARROW)
def test_narrow_payload_layout(dtype):
    values = compressible(64)
    elements = (blob._to_bf16 if dtype == Dtype.BF16 else blob._to_f16)(values).tobytes()
    raw = encode(values, "raw", dtype=dtype)
    assert raw[5] == dtype and raw[48:] == elements and len(raw) == 48 + 2 * 64
    shuffled = encode(compressible(4000), "shuffle-lz4", dtype=dtype)
    planes = lz4.block.decompress(shuffled[48:], uncompressed_size=8000)
    elements = (blob._to_bf16 if dtype == Dtype.BF16 else blob._to_f16)(compressible(4000)).tobytes()
    assert planes[:4000] == elements[0::2] and planes[4000:] == elements[1::2]


@pytest.mark.parametrize("dtype", NARROW)
def test_narrow_sizes_are_checked_by_width(dtype):
    b = bytearray(encode(np.ones(4, np.float32), "raw"))  # 16 payload bytes
    b[5] = dtype
    with pytest.raises(blob.BadLength, match=f"expected 8 for 4 {dtype.wire_name} elements"):
        decode(restamp(b))
    compressed = bytearray(encode(compressible(), "lz4"))  # an f32 block, 1000 elements
    compressed[5] = dtype
    if len(compressed) - 48 >= 2000:
        with pytest.raises(blob.BadLength, match="smaller than the 2000 raw bytes"):
            decode(restamp(compressed))
    else:
        with pytest.raises(blob.CorruptPayload, match="2000"):
            decode(restamp(compressed))


@pytest.mark.parametrize("dtype", NARROW)
def test_narrow_every_single_bit_flip_is_detected(dtype):
    for codec in CODECS:
        data = encode(compressible(40), codec, step=3, producer=1, dtype=dtype)
        for bit in range(len(data) * 8):
            b = bytearray(data)
            b[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(blob.BlobError):
                decode(bytes(b), expected_count=40)


def test_round_to_f32_is_identity():
    values = gradient(10)
    assert round_to(values, "f32").tobytes() == values.tobytes()


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


# --- sparse-lz4 and top-k ----------------------------------------------------------------------


def mostly_zeros(n=5000) -> np.ndarray:
    v = np.zeros(n, dtype=np.float32)
    v[::97] = (np.arange(0, n, 97) % 13).astype(np.float32) * 0.5
    return v


def craft_sparse(count, pairs, deltas, values, extra=b"", block=True) -> bytes:
    """A sparse-lz4 blob with a valid checksum around whatever it is given."""
    k = len(deltas)
    section = blob._shuffle(np.array(deltas, dtype="<u4").tobytes(), k, 4)
    section += blob._shuffle(np.array(values, dtype="<f4").tobytes(), len(values), 4) + extra
    payload = struct.pack("<I", pairs) + (lz4.block.compress(section, store_size=False) if block else b"")
    return blob._assemble(Dtype.F32, Codec.SPARSE_LZ4, count, 0, 0, payload)


@pytest.mark.parametrize("dtype", list(Dtype))
def test_sparse_codec_is_lossless(dtype):
    values = mostly_zeros()
    values[3] = np.float32(-0.0)
    values[10] = np.frombuffer(struct.pack("<I", 0x7FC01234), dtype=np.float32)[0]
    values[11] = -np.inf
    data = encode(values, "sparse-lz4", dtype=dtype)
    assert data[6] == 3 and len(data) < 48 + values.size * dtype.width // 20
    assert decode(data).values.tobytes() == round_to(values, dtype).tobytes()
    assert decode(encode(gradient(1000), "sparse-lz4", dtype=dtype)).header.codec == Codec.RAW
    zeros = encode(np.zeros(100, np.float32), "sparse-lz4", dtype=dtype)
    assert len(zeros) == 52 and decode(zeros).values.tobytes() == bytes(400)


def test_sparse_payload_layout():
    data = blob.encode_sparse(1000, [2, 7, 300], np.array([1.5, -2, 0.25], np.float32))
    assert data[5:7] == b"\x00\x03" and data[48:52] == b"\x03\0\0\0"
    section = lz4.block.decompress(data[52:], uncompressed_size=24)
    assert section == bytes([2, 5, 0x25, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xC0, 0, 0x80, 0x3F, 0xC0, 0x3E])


def reference_topk(v, k):
    mag = v.view("<u4") & 0x7FFFFFFF
    order = sorted(range(len(v)), key=lambda i: (-int(mag[i]), i))
    return sorted(order[:k])


@pytest.mark.parametrize("n,fraction", [(1, 0.01), (10, 0.15), (1000, 0.07), (777, 0.5), (300, 1.0)])
def test_topk_selection_is_the_definition(n, fraction):
    v = gradient(n, seed=n)
    v[::9] = np.float32(0.125) * ((np.arange(0, n, 9) % 3) - 1)  # ties
    k = blob.topk_count(n, fraction)
    assert k == min(n, max(1, int(np.ceil(fraction * n))))
    assert list(blob.topk_indices(v, fraction)) == reference_topk(v, k)
    assert list(blob.topk_indices(np.array([1, -3, 3, 2, -3], np.float32), 0.4)) == [1, 2]


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), float("inf"), "0.1", True, np.float32(2)])
def test_topk_fraction_outside_zero_to_one(fraction):
    with pytest.raises(blob.InvalidFraction, match=r"outside \(0, 1\]"):
        blob.encode_topk(np.ones(10, np.float32), fraction)


@pytest.mark.parametrize("dtype", list(Dtype))
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_topk_round_trip(dtype, fraction):
    v = gradient(20000)
    idx = blob.topk_indices(v, fraction)
    data = blob.encode_topk(v, fraction, step=4, producer=1, dtype=dtype)
    b = decode(data, expected_count=v.size)
    assert (b.header.step, b.header.producer) == (4, 1)
    if fraction <= 0.1:
        assert b.header.codec == Codec.SPARSE_LZ4
    expected = np.zeros_like(v)
    expected[idx] = round_to(v[idx], dtype)
    assert b.values.tobytes() == expected.tobytes()
    header, indices, values = blob.decode_sparse(data)
    if header.codec == Codec.SPARSE_LZ4:
        assert list(indices) == list(idx) and values.tobytes() == round_to(v[idx], dtype).tobytes()


def test_encode_sparse_refuses_bad_pairs():
    with pytest.raises(ValueError, match="strictly increasing"):
        blob.encode_sparse(10, [3, 3], [1, 2])
    with pytest.raises(ValueError, match="strictly increasing"):
        blob.encode_sparse(10, [10], [1])
    with pytest.raises(ValueError, match="2 indices for 1 values"):
        blob.encode_sparse(10, [1, 2], [1])


def test_crafted_sparse_blob_decodes():
    v = decode(craft_sparse(20, 3, [0, 5, 14], [1, 2, 3])).values
    assert v[0] == 1 and v[5] == 2 and v[19] == 3 and np.count_nonzero(v) == 3


@pytest.mark.parametrize("deltas", [[20], [5, 15], [19, 1], [0, 0xFFFFFFFF]])
def test_sparse_index_out_of_range(deltas):
    with pytest.raises(blob.InvalidIndex, match="out of range for 20 elements"):
        decode(craft_sparse(20, len(deltas), deltas, [1] * len(deltas)))


def test_sparse_index_unsorted_or_repeated():
    with pytest.raises(blob.InvalidIndex, match="strictly increasing"):
        decode(craft_sparse(20, 2, [10, 2**32 - 3], [1, 1]))
    with pytest.raises(blob.InvalidIndex, match=r"pair 2 repeats index 7 \(delta 0"):
        decode(craft_sparse(20, 3, [4, 3, 0], [1, 2, 3]))
    with pytest.raises(blob.InvalidIndex):
        blob.decode_sparse(craft_sparse(20, 3, [4, 3, 0], [1, 2, 3]))


def test_sparse_pair_count_disagrees_with_payload():
    with pytest.raises(blob.CorruptPayload):
        decode(craft_sparse(100, 3, [1, 2], [1, 2]))
    with pytest.raises(blob.CorruptPayload):
        decode(craft_sparse(100, 2, [1, 2, 3], [1, 2, 3]))
    with pytest.raises(blob.CorruptPayload):
        decode(craft_sparse(100, 2, [1, 2], [1, 2], extra=b"\0\0\0"))
    with pytest.raises(blob.BadLength, match="no LZ4 block"):
        decode(craft_sparse(100, 2, [], [], block=False))
    with pytest.raises(blob.BadLength, match="no pairs"):
        decode(craft_sparse(100, 0, [1], [1]))


@pytest.mark.parametrize("pairs", [101, 1 << 31, 0xFFFFFFFF])
def test_sparse_absurd_pair_count(pairs):
    with pytest.raises(blob.BadLength, match=f"declares {pairs} pairs for 100 elements"):
        decode(craft_sparse(100, pairs, [1], [1]))


def test_sparse_pairs_more_than_the_block_can_hold():
    with pytest.raises(blob.BadLength, match="more than its"):
        decode(craft_sparse(1 << 28, 1 << 28, [1], [1]))


def test_sparse_absurd_sizes():
    with pytest.raises(blob.BlobTooLarge):
        decode(craft_sparse(1 << 40, 1, [1], [1]))
    with pytest.raises(blob.BlobTooLarge, match="32-bit"):
        decode(craft_sparse((1 << 32) + 1, 1, [1], [1]), max_count=1 << 40)
    with pytest.raises(blob.BadLength, match="at least 4"):
        decode(blob._assemble(Dtype.F32, Codec.SPARSE_LZ4, 100, 0, 0, b"\0\0"))
    with pytest.raises(blob.BadLength, match="smaller than the 12 raw bytes"):
        decode(craft_sparse(3, 1, [1], [1]))


def test_sparse_corruption_behind_valid_checksum_is_typed():
    rng = np.random.default_rng(5)
    sample = bytearray(blob.encode_topk(gradient(3000), 0.05))
    for trial in range(300):
        b = bytearray(sample)
        for _ in range(1 + trial % 4):
            b[48 + int(rng.integers(len(b) - 48))] = int(rng.integers(256))
        try:
            decode(restamp(b))
        except (blob.CorruptPayload, blob.InvalidIndex, blob.BadLength):
            pass


# --- bitshuffle-lz4 ----------------------------------------------------------------------------


def bitshuffle_by_definition(raw: bytes, n: int, w: int) -> bytes:
    """The bit shuffle as docs/wire-format.md words it, bit by bit (small inputs only)."""
    m = n - n % 8
    out = bytearray()
    for j in range(w):
        for b in range(8):
            plane = bytearray(m // 8)
            for i in range(m):
                if raw[i * w + j] >> b & 1:
                    plane[i // 8] |= 1 << (i % 8)
            out += plane
    return bytes(out + raw[m * w:])


def bitshuffle_by_unpackbits(raw: bytes, n: int, w: int) -> bytes:
    """The same with numpy's bit (un)packing: planes[j, b, i // 8] bit i % 8 = bit b of byte j of element i."""
    m = n - n % 8
    elements = np.frombuffer(raw, dtype=np.uint8, count=m * w).reshape(m, w)
    bits = np.unpackbits(elements[:, :, None], axis=2, bitorder="little")  # [i, j, b]
    planes = np.packbits(bits.transpose(1, 2, 0), axis=2, bitorder="little")  # [j, b, i // 8]
    return planes.tobytes() + raw[m * w:]


def element_bytes(values: np.ndarray, dtype: Dtype) -> bytes:
    if dtype == Dtype.F32:
        return values.astype("<f4").tobytes()
    return (blob._to_bf16 if dtype == Dtype.BF16 else blob._to_f16)(values).tobytes()


def test_bitshuffle_doc_example():
    """docs/wire-format.md: eight bf16 elements, 0x3F80 (1.0) then seven 0x0000."""
    raw = np.array([0x3F80] + [0] * 7, dtype="<u2").tobytes()
    expected = bytes.fromhex("00 00 00 00 00 00 00 01 01 01 01 01 01 01 00 00")
    assert blob._bitshuffle(raw, 8, 2) == expected
    assert blob._bitunshuffle(expected, 8, 2) == raw
    assert bitshuffle_by_definition(raw, 8, 2) == expected
    values = np.array([1.0] + [0.0] * 7, dtype=np.float32)
    assert element_bytes(values, Dtype.BF16) == raw
    data = encode(values, "bitshuffle-lz4", step=2, producer=1, dtype="bf16")
    b = decode(data, expected_count=8)
    assert b.values.tobytes() == values.tobytes() and (b.header.step, b.header.producer) == (2, 1)
    if b.header.codec == Codec.BITSHUFFLE_LZ4:  # LZ4 gets these 16 bytes down to 14
        assert lz4.block.decompress(data[48:], uncompressed_size=16) == expected
    else:
        assert b.header.codec == Codec.RAW and data[48:] == raw
    # the example 512 times over compresses, and its block holds exactly those planes
    many = np.tile(values, 512)
    data = encode(many, "bitshuffle-lz4", dtype="bf16")
    assert data[5:7] == b"\x02\x04" and len(data) - 48 < 8192
    planes = lz4.block.decompress(data[48:], uncompressed_size=8192)
    assert planes == b"".join(bytes([byte]) * 512 for byte in expected)
    assert decode(data, expected_count=many.size).values.tobytes() == many.tobytes()


@pytest.mark.parametrize("w", [2, 4])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 1003])
def test_bitshuffle_is_the_definition(n, w):
    raw = np.random.default_rng(n * w).integers(0, 256, n * w, dtype=np.uint8).tobytes()
    shuffled = blob._bitshuffle(raw, n, w)
    assert shuffled == bitshuffle_by_definition(raw, n, w)
    assert blob._bitunshuffle(shuffled, n, w) == raw


@pytest.mark.parametrize("w", [2, 4])
def test_bitshuffle_of_a_large_blob(w):
    n = 262147
    raw = np.random.default_rng(w).integers(0, 256, n * w, dtype=np.uint8).tobytes()
    shuffled = blob._bitshuffle(raw, n, w)
    assert len(shuffled) == n * w and shuffled == bitshuffle_by_unpackbits(raw, n, w)
    assert shuffled[-3 * w:] == raw[-3 * w:]  # the last n mod 8 elements as they are
    assert blob._bitunshuffle(shuffled, n, w) == raw


@pytest.mark.parametrize("dtype", list(Dtype))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 262147])
def test_bitshuffle_round_trip(dtype, n):
    values = gradient(n, seed=n)
    data = encode(values, "bitshuffle-lz4", step=5, producer=2, dtype=dtype)
    b = decode(data, expected_count=n)
    assert (b.header.dtype, b.header.step, b.header.producer, b.header.count) == (dtype, 5, 2, n)
    assert b.values.dtype == np.float32
    assert b.values.tobytes() == round_to(values, dtype).tobytes()
    raw_size = n * dtype.width
    if b.header.codec == Codec.BITSHUFFLE_LZ4:
        assert 0 < len(data) - 48 < raw_size
        block = lz4.block.decompress(data[48:], uncompressed_size=raw_size)
        assert block == bitshuffle_by_unpackbits(element_bytes(values, dtype), n, dtype.width)
    else:
        assert b.header.codec == Codec.RAW and data[48:] == element_bytes(values, dtype)
    if n <= 8:
        assert b.header.codec == Codec.RAW
    if n == 262147:  # gaussian gradients: sign and exponent planes compress in every dtype
        assert b.header.codec == Codec.BITSHUFFLE_LZ4


def test_bitshuffle_compresses_bf16_gradients():
    n = 262144
    data = encode(gradient(n, seed=11), "bitshuffle-lz4", dtype="bf16")
    payload = len(data) - 48
    assert data[6] == Codec.BITSHUFFLE_LZ4 and payload < n * 2
    assert (n * 2) / payload >= 1.2, f"bitshuffle-lz4 payload {payload} bytes for {n * 2} raw bf16 bytes"


@pytest.mark.parametrize("dtype", list(Dtype))
def test_bitshuffle_incompressible_is_stored_raw(dtype):
    """Random element bits (every plane is noise) are stored raw, with codec byte 0."""
    rng = np.random.default_rng(12)
    if dtype == Dtype.F32:
        values = rng.integers(0, 1 << 32, 262144, dtype=np.uint64).astype("<u4").view("<f4")
    else:  # random 16-bit elements, as the f32 values they widen to
        bits = rng.integers(0, 1 << 16, 262144, dtype=np.uint32).astype("<u2")
        values = (blob._from_bf16 if dtype == Dtype.BF16 else blob._from_f16)(bits)
    data = encode(values, "bitshuffle-lz4", dtype=dtype)
    assert data[6] == 0 and len(data) == 48 + values.size * dtype.width
    assert decode(data).values.tobytes() == round_to(values, dtype).tobytes()
    assert encode(np.zeros(0, np.float32), "bitshuffle-lz4", dtype=dtype)[6] == 0


def craft_bitshuffle(count: int, block: bytes, dtype: Dtype = Dtype.F32) -> bytes:
    """A bitshuffle-lz4 blob with a valid checksum around whatever block it is given."""
    return blob._assemble(dtype, Codec.BITSHUFFLE_LZ4, count, 0, 0, block)


@pytest.mark.parametrize("dtype", list(Dtype))
def test_bitshuffle_truncated_block(dtype):
    values = compressible()
    shuffled = blob._bitshuffle(element_bytes(values, dtype), values.size, dtype.width)
    whole = lz4.block.compress(shuffled, store_size=False)
    assert decode(craft_bitshuffle(values.size, whole, dtype)).values.tobytes() == round_to(values, dtype).tobytes()
    for cut in (1, len(whole) // 2, len(whole) - 1):
        with pytest.raises(blob.CorruptPayload, match="LZ4 block"):
            decode(craft_bitshuffle(values.size, whole[:cut], dtype))


@pytest.mark.parametrize("dtype", list(Dtype))
@pytest.mark.parametrize("delta", [-8, -1, 1, 16])
def test_bitshuffle_block_of_wrong_length(dtype, delta):
    n = 1000
    raw_size = n * dtype.width
    block = lz4.block.compress(bytes(raw_size + delta), store_size=False)  # zeros: a short block
    with pytest.raises(blob.CorruptPayload, match=str(raw_size)):
        decode(craft_bitshuffle(n, block, dtype), expected_count=n)


@pytest.mark.parametrize("dtype", list(Dtype))
def test_bitshuffle_corruption_behind_valid_checksum_is_typed(dtype):
    rng = np.random.default_rng(6)
    sample = bytearray(encode(gradient(3000), "bitshuffle-lz4", dtype=dtype))
    assert sample[6] == Codec.BITSHUFFLE_LZ4
    refused = 0
    for trial in range(300):
        b = bytearray(sample)
        for _ in range(1 + trial % 4):
            b[48 + int(rng.integers(len(b) - 48))] = int(rng.integers(256))
        try:
            v = decode(restamp(b), expected_count=3000).values
        except blob.CorruptPayload:
            refused += 1
        else:
            assert v.size == 3000 and v.dtype == np.float32
    assert refused > 0
