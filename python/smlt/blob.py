"""Tensor blobs: the 48-byte header plus payload that holds every tensor value in Redis.

See "Tensor blobs" in docs/wire-format.md. :func:`encode` writes a blob, :func:`decode` reads an
untrusted one and raises a :class:`BlobError` subclass that names what is wrong. Blobs of dtype
``bf16`` and ``f16`` are written from float32 values rounded to nearest even and read back as
float32, bit for bit as SMLT's Swift code does (:func:`round_to`). The dense compressed codecs
are one LZ4 block of the element bytes: as they are (``lz4``), byte-shuffled (``shuffle-lz4``)
or bit-shuffled (``bitshuffle-lz4``). Sparse blobs (codec ``sparse-lz4``) hold (index, value)
pairs: :func:`encode_sparse` and :func:`encode_topk` write them, :func:`decode_sparse` reads the
pairs and :func:`topk_indices` is SMLT's top-k selection.
"""

from __future__ import annotations

import enum
import math
import numbers
import struct
from dataclasses import dataclass

import crc32c as _crc32c
import lz4.block as _lz4
import numpy as np

__all__ = [
    "Codec", "Dtype", "BlobHeader", "Blob", "encode", "decode", "parse_header", "round_to",
    "BlobError", "TruncatedBlob", "BadHeader", "BlobTooLarge", "BadLength",
    "UnsupportedDtype", "ChecksumMismatch", "CorruptPayload", "CountMismatch", "InvalidIndex", "InvalidFraction",
    "encode_sparse", "encode_topk", "decode_sparse", "topk_count", "topk_indices",
    "HEADER_SIZE", "MAGIC", "PRODUCER_SERVER", "DEFAULT_MAX_COUNT",
]

HEADER_SIZE = 48
MAGIC = b"SMLT"
FORMAT_VERSION = 1
#: ``producer`` of blobs written by a parameter server or a driver writing parameters.
PRODUCER_SERVER = 0xFFFFFFFF
#: The default limit on a blob's element count (1 GiB of f32).
DEFAULT_MAX_COUNT = 1 << 28
#: LZ4_MAX_INPUT_SIZE: larger inputs are stored raw.
LZ4_MAX_INPUT_SIZE = 0x7E000000

# magic, version, dtype, codec, flags, count, step, producer, reserved, payload length
_HEAD = struct.Struct("<4sBBBBQQIIQ")


class Dtype(enum.IntEnum):
    """The dtype byte (offset 5) of a blob: how its elements are stored."""

    F32 = 0
    F16 = 1
    BF16 = 2

    @property
    def wire_name(self) -> str:
        """``f32``, ``f16`` or ``bf16``."""
        return ("f32", "f16", "bf16")[self.value]

    @property
    def width(self) -> int:
        """Bytes per stored element."""
        return 4 if self == Dtype.F32 else 2

    @property
    def lz4_acceleration(self) -> int:
        """The LZ4 acceleration SMLT's writers use for lz4 and shuffle-lz4 (1 for f32, 48 for the
        2-byte dtypes); bitshuffle-lz4 uses 4 for every dtype, as the Swift writer does."""
        return 1 if self == Dtype.F32 else 48

    @classmethod
    def parse(cls, value: "Dtype | str | int") -> "Dtype":
        """A dtype from its name (``"bf16"``), its byte, or a Dtype."""
        if isinstance(value, Dtype):
            return value
        if isinstance(value, str):
            for d in cls:
                if d.wire_name == value:
                    return d
            raise ValueError(f"unknown dtype {value!r}: expected f32, f16 or bf16")
        return cls(value)


class Codec(enum.IntEnum):
    """The codec byte (offset 6) of a blob."""

    RAW = 0
    LZ4 = 1
    SHUFFLE_LZ4 = 2
    SPARSE_LZ4 = 3
    BITSHUFFLE_LZ4 = 4

    @property
    def wire_name(self) -> str:
        """The name used in job specs and maps: ``raw``, ``lz4``, ``shuffle-lz4``, ``sparse-lz4`` or
        ``bitshuffle-lz4``."""
        return ("raw", "lz4", "shuffle-lz4", "sparse-lz4", "bitshuffle-lz4")[self.value]

    @classmethod
    def parse(cls, value: "Codec | str | int") -> "Codec":
        """A codec from its wire name (``"shuffle-lz4"``), its byte, or a Codec."""
        if isinstance(value, Codec):
            return value
        if isinstance(value, str):
            for c in cls:
                if c.wire_name == value:
                    return c
            raise ValueError(
                f"unknown codec {value!r}: expected raw, lz4, shuffle-lz4, bitshuffle-lz4 or sparse-lz4")
        return cls(value)


class BlobError(ValueError):
    """A blob that must not be used. Subclasses say which check failed."""


class TruncatedBlob(BlobError):
    """Fewer than 48 bytes."""


class BadHeader(BlobError):
    """Wrong magic, version, dtype or codec byte, or non-zero flags or reserved bytes."""


class BlobTooLarge(BlobError):
    """The header claims more elements than the reader's limit."""


class BadLength(BlobError):
    """The payload length field, the bytes present and the count disagree."""


class UnsupportedDtype(BadHeader):
    """A dtype byte other than 0 (f32), 1 (f16) or 2 (bf16)."""


class ChecksumMismatch(BlobError):
    """The CRC-32C over header bytes 0-39 and the payload does not match bytes 40-43."""


class CorruptPayload(BlobError):
    """The LZ4 block does not decode to exactly ``count × width`` bytes."""


class CountMismatch(BlobError):
    """The blob's element count differs from the count the reader expects for that key."""


class InvalidIndex(BlobError):
    """A sparse blob's index is out of range, repeated or not increasing."""


class InvalidFraction(ValueError):
    """A top-k fraction that is not a number in (0, 1]."""


@dataclass(frozen=True)
class BlobHeader:
    """The fields of a blob's 48-byte header."""

    version: int
    dtype: Dtype
    codec: Codec
    count: int
    step: int
    producer: int
    payload_length: int
    checksum: int


@dataclass(frozen=True)
class Blob:
    """A decoded blob: its header and its elements as float32 (read-only for f32 blobs)."""

    header: BlobHeader
    values: np.ndarray


def _crc(head40: bytes, payload: bytes | memoryview) -> int:
    return _crc32c.crc32c(payload, value=_crc32c.crc32c(head40))


def _shuffle(raw: bytes, count: int, width: int = 4) -> bytes:
    return np.frombuffer(raw, dtype=np.uint8).reshape(count, width).T.tobytes()


def _unshuffle(shuffled: bytes, count: int, width: int = 4) -> bytes:
    return np.frombuffer(shuffled, dtype=np.uint8).reshape(width, count).T.tobytes()


def _transpose8x8(words: np.ndarray) -> None:
    """Transpose, in place, the 8×8 bit matrix in each little-endian u64 of ``words``: bit
    ``8r + c`` (bit ``c`` of byte ``r``) swaps with bit ``8c + r``. Its own inverse."""
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0)):
        t = ((words >> np.uint64(shift)) ^ words) & np.uint64(mask)
        words ^= t
        words ^= t << np.uint64(shift)


def _bitshuffle(raw: bytes, count: int, width: int) -> bytes:
    """The bit shuffle of ``count`` elements of ``width`` bytes (docs/wire-format.md, "Codecs"):
    with ``m = count - count % 8``, one plane of ``m / 8`` bytes per element byte ``j`` and bit
    ``b``, in the order (0, 0), (0, 1), ..., (width - 1, 7), whose bit ``i % 8`` of byte ``i // 8``
    (least significant first) is bit ``b`` of byte ``j`` of element ``i``; then the raw bytes of
    the last ``count % 8`` elements as they are.

    Byte ``j`` of eight elements ``8q .. 8q + 7`` is one u64 (element ``8q + k`` in its byte
    ``k``); transposing its bits puts bit ``b`` of all eight in byte ``b``, which is byte ``q``
    of plane ``(j, b)``."""
    if len(raw) != count * width:
        raise ValueError(f"{len(raw)} bytes are not {count} elements of {width} bytes")
    m = count - count % 8
    groups = np.frombuffer(raw, dtype=np.uint8, count=m * width).reshape(m // 8, 8, width)
    words = groups.transpose(2, 0, 1).copy().view("<u8")  # [j, q]: byte k is byte j of element 8q + k
    _transpose8x8(words)  # [j, q]: byte b holds bit b of byte j of elements 8q .. 8q + 7
    planes = words.view(np.uint8).reshape(width, m // 8, 8).transpose(0, 2, 1)  # [j, b, q]
    return planes.tobytes() + bytes(raw[m * width:])


def _bitunshuffle(shuffled: bytes, count: int, width: int) -> bytes:
    """The element bytes back from :func:`_bitshuffle`'s ``count × width`` bytes."""
    if len(shuffled) != count * width:
        raise ValueError(f"{len(shuffled)} bytes are not {count} elements of {width} bytes")
    m = count - count % 8
    planes = np.frombuffer(shuffled, dtype=np.uint8, count=m * width).reshape(width, 8, m // 8)
    words = planes.transpose(0, 2, 1).copy().view("<u8")  # [j, q]: byte b is byte q of plane (j, b)
    _transpose8x8(words)  # [j, q]: byte k is byte j of element 8q + k
    elements = words.view(np.uint8).reshape(width, m // 8, 8).transpose(1, 2, 0)  # [q, k, j]
    return elements.tobytes() + bytes(shuffled[m * width:])


def _to_bf16(f32: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits: round to nearest even; a NaN keeps its sign and top payload bits
    and gets the quiet bit."""
    b = f32.view("<u4")
    r = ((b + np.uint32(0x7FFF) + ((b >> 16) & 1)) >> 16).astype("<u2")
    nan = (b & 0x7FFFFFFF) > 0x7F800000
    r[nan] = ((b[nan] >> 16) | 0x40).astype("<u2")
    return r


def _from_bf16(h: np.ndarray) -> np.ndarray:
    return (h.astype("<u4") << 16).view("<f4")


def _to_f16(f32: np.ndarray) -> np.ndarray:
    """float32 -> IEEE f16 bits, round to nearest even, in integer arithmetic (as x86's F16C):
    65520 and up become infinity, f16 subnormals are rounded exactly, a NaN becomes
    sign | 0x7E00 | top 9 payload bits."""
    b = f32.view("<u4")
    sign = (b >> 16) & 0x8000
    a = b & 0x7FFFFFFF
    r = np.zeros(a.shape, dtype="<u4")
    nan = a > 0x7F800000
    r[nan] = 0x7E00 | ((a[nan] >> 13) & 0x3FF)
    r[(a >= 0x477FF000) & ~nan] = 0x7C00
    normal = (a >= 0x38800000) & (a < 0x477FF000)
    an = a[normal]
    r[normal] = (an - 0x38000000 + 0xFFF + ((an >> 13) & 1)) >> 13
    sub = (a < 0x38800000) & ((a >> 23) >= 102)  # below 2^-25 (inclusive) it rounds to zero
    asub = a[sub]
    m = (asub & 0x7FFFFF) | 0x800000
    shift = 126 - (asub >> 23)
    q = m >> shift
    rest = m & ((np.uint32(1) << shift) - 1)
    half = np.uint32(1) << (shift - 1)
    r[sub] = q + ((rest > half) | ((rest == half) & ((q & 1) == 1)))
    return (r | sign).astype("<u2")


def _from_f16(h: np.ndarray) -> np.ndarray:
    out = h.view("<f2").astype("<f4")  # exact for every non-NaN value
    nan = (h & 0x7C00 == 0x7C00) & (h & 0x3FF != 0)
    bits = out.view("<u4")
    hn = h[nan].astype("<u4")
    bits[nan] = ((hn & 0x8000) << 16) | 0x7FC00000 | ((hn & 0x3FF) << 13)  # a NaN gets the quiet bit
    return out


def round_to(values, dtype: "Dtype | str") -> np.ndarray:
    """The float32 values a blob of ``dtype`` holds for ``values`` (what :func:`decode` returns
    after :func:`encode`); a worker with error feedback keeps ``values - round_to(values, dtype)``."""
    dtype = Dtype.parse(dtype)
    array = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1), dtype="<f4")
    if dtype == Dtype.F32:
        return array.copy()
    if dtype == Dtype.BF16:
        return _from_bf16(_to_bf16(array))
    return _from_f16(_to_f16(array))


def encode(values, codec: Codec | str = Codec.RAW, step: int = 0, producer: int = PRODUCER_SERVER,
           dtype: Dtype | str = Dtype.F32) -> bytes:
    """Encode ``values`` (any array-like of float32; cast exactly, never rounded) as a blob of
    ``dtype``: f32 stores them as they are, bf16 and f16 round each to nearest even.

    Compressed codecs fall back to raw when the compressed payload would not be smaller than the
    raw bytes, as the format requires.
    """
    codec = Codec.parse(codec)
    dtype = Dtype.parse(dtype)
    array = np.asarray(values)
    if array.dtype != np.float32:
        cast = array.astype(np.float32)
        if not np.array_equal(cast, array, equal_nan=True):
            raise ValueError(f"values of dtype {array.dtype} are not exactly representable as float32")
        array = cast
    f32 = np.ascontiguousarray(array.reshape(-1), dtype="<f4")
    count = f32.size
    if dtype == Dtype.F32:
        raw = f32.tobytes()
    elif dtype == Dtype.BF16:
        raw = _to_bf16(f32).tobytes()
    else:
        raw = _to_f16(f32).tobytes()
    if not 0 <= step < 1 << 64:
        raise ValueError(f"step {step} is not an unsigned 64-bit integer")
    if not 0 <= producer <= 0xFFFFFFFF:
        raise ValueError(f"producer {producer} is not an unsigned 32-bit integer")
    payload = raw
    used = Codec.RAW
    if codec == Codec.SPARSE_LZ4:
        sparse = _lossless_sparse(raw, count, dtype)
        if sparse is not None:
            payload, used = sparse, codec
    elif codec != Codec.RAW and 0 < len(raw) <= LZ4_MAX_INPUT_SIZE:
        if codec == Codec.SHUFFLE_LZ4:
            source = _shuffle(raw, count, dtype.width)
        elif codec == Codec.BITSHUFFLE_LZ4:
            source = _bitshuffle(raw, count, dtype.width)
        else:
            source = raw
        # bitshuffle-lz4 compresses at acceleration 4 whatever the dtype, as the Swift writer does
        # (DType.lz4Acceleration(for:)): bit planes are runs or noise, and from 4 on LZ4 skips the
        # noise several times faster at the same ratio
        acceleration = 4 if codec == Codec.BITSHUFFLE_LZ4 else dtype.lz4_acceleration
        compressed = _lz4.compress(source, mode="fast", acceleration=acceleration, store_size=False)
        if len(compressed) < len(raw):
            payload, used = compressed, codec
    return _assemble(dtype, used, count, step, producer, payload)


def _assemble(dtype: Dtype, codec: Codec, count: int, step: int, producer: int, payload: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, dtype, codec, 0, count, step, producer, 0, len(payload))
    return head + struct.pack("<II", _crc(head, payload), 0) + payload


def _elements(f32: np.ndarray, dtype: Dtype) -> bytes:
    """The little-endian elements of ``dtype`` for float32 values."""
    if dtype == Dtype.F32:
        return f32.tobytes()
    if dtype == Dtype.BF16:
        return _to_bf16(f32).tobytes()
    return _to_f16(f32).tobytes()


def _sparse_payload(count: int, indices: np.ndarray, elements: bytes, width: int) -> bytes | None:
    """The sparse-lz4 payload of the pairs (indices checked, elements of the dtype), or None
    when it would not be smaller than the ``count × width`` raw bytes."""
    k = len(indices)
    raw_size = count * width
    if k == 0:
        return b"\0\0\0\0" if 4 < raw_size else None
    if k * (4 + width) > LZ4_MAX_INPUT_SIZE:
        return None
    deltas = np.diff(indices.astype(np.int64), prepend=0).astype("<u4").tobytes()
    section = _shuffle(deltas, k, 4) + _shuffle(elements, k, width)
    payload = struct.pack("<I", k) + _lz4.compress(section, mode="default", store_size=False)
    return payload if len(payload) < raw_size else None


def _lossless_sparse(raw: bytes, count: int, dtype: Dtype) -> bytes | None:
    """The sparse-lz4 payload of the elements whose stored bits are not all zero, as SMLT's
    writer makes it (giving up once more than (count × width − 4) / (width + 1) are non-zero)."""
    width = dtype.width
    limit = (count * width - 4) // (width + 1)
    if limit <= 0 or count > 1 << 32:
        return None
    bits = np.frombuffer(raw, dtype="<u4" if width == 4 else "<u2")
    indices = np.flatnonzero(bits)
    if len(indices) > limit:
        return None
    return _sparse_payload(count, indices, bits[indices].tobytes(), width)


def _f32(values) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype != np.float32:
        cast = array.astype(np.float32)
        if not np.array_equal(cast, array, equal_nan=True):
            raise ValueError(f"values of dtype {array.dtype} are not exactly representable as float32")
        array = cast
    return np.ascontiguousarray(array.reshape(-1), dtype="<f4")


def encode_sparse(count: int, indices, values, step: int = 0, producer: int = PRODUCER_SERVER,
                  dtype: Dtype | str = Dtype.F32) -> bytes:
    """Encode pairs as a sparse-lz4 blob of ``count`` elements: ``indices`` strictly increasing
    and below ``count``, ``values`` (float32) one per index, stored as ``dtype``. When that is
    not smaller than the dense raw bytes the dense vector is stored raw instead (it decodes to
    the same values)."""
    dtype = Dtype.parse(dtype)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    f32 = _f32(values)
    if len(idx) != len(f32):
        raise ValueError(f"{len(idx)} indices for {len(f32)} values")
    if not 0 <= count <= 1 << 32:
        raise ValueError(f"a sparse blob of {count} elements: indices are 32-bit")
    if len(idx) and (idx[0] < 0 or (np.diff(idx) <= 0).any() or idx[-1] >= count):
        raise ValueError(f"indices must be strictly increasing and in 0..<{count}")
    if not 0 <= step < 1 << 64:
        raise ValueError(f"step {step} is not an unsigned 64-bit integer")
    if not 0 <= producer <= 0xFFFFFFFF:
        raise ValueError(f"producer {producer} is not an unsigned 32-bit integer")
    payload = _sparse_payload(count, idx, _elements(f32, dtype), dtype.width)
    if payload is None:
        dense = np.zeros(count, dtype="<f4")
        dense[idx] = f32
        return encode(dense, Codec.RAW, step, producer, dtype)
    return _assemble(dtype, Codec.SPARSE_LZ4, count, step, producer, payload)


def topk_count(n: int, fraction: float) -> int:
    """How many of ``n`` elements top-k keeps: ``ceil(fraction × n)`` in double precision, at
    least 1 and at most ``n`` (0 when ``n`` is 0). Raises :class:`InvalidFraction` unless
    ``0 < fraction <= 1``."""
    if isinstance(fraction, bool) or not (isinstance(fraction, numbers.Real) and 0 < fraction <= 1):
        raise InvalidFraction(f"top-k fraction {fraction!r} is outside (0, 1]: it must be above 0 and at most 1")
    if n == 0:
        return 0
    return min(n, max(1, math.ceil(float(fraction) * n)))


def topk_indices(values, fraction: float) -> np.ndarray:
    """SMLT's top-k selection (docs/wire-format.md, "Top-k gradients"): the indices, increasing,
    of the ``topk_count`` elements of largest magnitude (float32 bits with the sign cleared),
    the lower index first among equal magnitudes."""
    f32 = _f32(values)
    k = topk_count(f32.size, fraction)
    magnitude = (f32.view("<u4") & np.uint32(0x7FFFFFFF)).astype(np.int64)
    return np.sort(np.argsort(-magnitude, kind="stable")[:k]).astype(np.uint32)


def encode_topk(values, fraction: float, step: int = 0, producer: int = PRODUCER_SERVER,
                dtype: Dtype | str = Dtype.F32) -> bytes:
    """The top-k blob of a gradient chunk (:func:`topk_indices` then :func:`encode_sparse`),
    byte for byte what SMLT's Swift ``TensorBlob.encodeTopK`` writes."""
    f32 = _f32(values)
    idx = topk_indices(f32, fraction)
    return encode_sparse(f32.size, idx, f32[idx], step, producer, dtype)


def parse_header(data: bytes | memoryview, max_count: int = DEFAULT_MAX_COUNT) -> BlobHeader:
    """Check a blob's first 48 bytes (everything that can be checked without the payload)."""
    if len(data) < HEADER_SIZE:
        raise TruncatedBlob(f"blob is {len(data)} bytes, shorter than its 48-byte header")
    head = bytes(data[:HEADER_SIZE])
    magic, version, dtype, codec, flags, count, step, producer, reserved1, length = _HEAD.unpack(head[:40])
    checksum, reserved2 = struct.unpack("<II", head[40:48])
    if magic != MAGIC:
        raise BadHeader(f"bad magic {magic!r}, expected b'SMLT'")
    if version != FORMAT_VERSION:
        raise BadHeader(f"unsupported format version {version}, expected 1")
    if dtype > 2:
        raise UnsupportedDtype(f"unknown dtype byte {dtype}, expected 0-2 (f32, f16, bf16)")
    if codec > 4:
        raise BadHeader(
            f"unknown codec byte {codec}, expected 0-4 (raw, lz4, shuffle-lz4, sparse-lz4, bitshuffle-lz4)")
    if flags != 0:
        raise BadHeader(f"flags byte is {flags}, must be 0")
    if reserved1 != 0:
        raise BadHeader(f"reserved bytes 28-31 are {reserved1:#x}, must be 0")
    if reserved2 != 0:
        raise BadHeader(f"reserved bytes 44-47 are {reserved2:#x}, must be 0")
    if count > max_count:
        raise BlobTooLarge(f"blob claims {count} elements, more than the limit of {max_count}")
    return BlobHeader(version, Dtype(dtype), Codec(codec), count, step, producer, length, checksum)


def _checked(data: bytes | memoryview, expected_count: int | None,
             max_count: int) -> tuple[BlobHeader, bytes]:
    """The header and payload of a blob that passed every check up to the checksum."""
    header = parse_header(data, max_count)
    count = header.count
    if expected_count is not None and count != expected_count:
        raise CountMismatch(f"blob holds {count} elements, expected {expected_count}")
    present = len(data) - HEADER_SIZE
    if header.payload_length != present:
        raise BadLength(f"payload length field says {header.payload_length} bytes, {present} follow the header")
    width = header.dtype.width
    raw_size = count * width
    if header.codec == Codec.RAW:
        if present != raw_size:
            raise BadLength(
                f"raw payload is {present} bytes, expected {raw_size} for {count} {header.dtype.wire_name} elements")
    elif header.codec == Codec.SPARSE_LZ4:
        if count > 1 << 32:
            raise BlobTooLarge(f"sparse blob of {count} elements: indices are 32-bit, so at most 2^32")
        if present < 4 or present >= raw_size:
            raise BadLength(
                f"sparse payload is {present} bytes; it must be at least 4 and smaller than the {raw_size} raw bytes")
    elif present == 0 or present >= raw_size:
        raise BadLength(
            f"{header.codec.wire_name} payload is {present} bytes; it must be non-empty and smaller than "
            f"the {raw_size} raw bytes")
    head = bytes(data[:40])
    payload = bytes(data[HEADER_SIZE:])
    actual = _crc(head, payload)
    if actual != header.checksum:
        raise ChecksumMismatch(f"checksum {header.checksum:#010x} does not match the content's {actual:#010x}")
    return header, payload


def decode(data: bytes | memoryview, expected_count: int | None = None,
           max_count: int = DEFAULT_MAX_COUNT) -> Blob:
    """Validate and decode an untrusted blob.

    ``expected_count`` is the element count the reader knows from the layout (a chunk's size);
    a blob of another size raises :class:`CountMismatch`. Every check of "Validation" in
    docs/wire-format.md is made, the checksum before any decompression.
    """
    header, payload = _checked(data, expected_count, max_count)
    count, width = header.count, header.dtype.width
    raw_size = count * width
    if header.codec == Codec.SPARSE_LZ4:
        indices, values = _read_sparse(header, payload)
        dense = np.zeros(count, dtype=np.float32)
        dense[indices] = values
        return Blob(header, dense)
    if header.codec == Codec.RAW:
        raw = payload
    else:
        try:
            raw = _lz4.decompress(payload, uncompressed_size=raw_size)
        except Exception as e:  # lz4.block.LZ4BlockError
            raise CorruptPayload(f"LZ4 block does not decode to {raw_size} bytes: {e}") from None
        if len(raw) != raw_size:
            raise CorruptPayload(f"LZ4 block decodes to {len(raw)} bytes, expected {raw_size}")
        if header.codec == Codec.SHUFFLE_LZ4:
            raw = _unshuffle(raw, count, width)
        elif header.codec == Codec.BITSHUFFLE_LZ4:
            raw = _bitunshuffle(raw, count, width)
    if header.dtype == Dtype.F32:
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
    elif header.dtype == Dtype.BF16:
        values = _from_bf16(np.frombuffer(raw, dtype="<u2"))
    else:
        values = _from_f16(np.frombuffer(raw, dtype="<u2"))
    return Blob(header, values)


def _read_sparse(header: BlobHeader, payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The checked pairs of a sparse-lz4 payload (header, sizes and checksum already checked):
    indices (int64, increasing) and values (float32)."""
    count, width = header.count, header.dtype.width
    (k,) = struct.unpack_from("<I", payload, 0)
    if k > count:
        raise BadLength(f"sparse blob declares {k} pairs for {count} elements")
    if k == 0:
        if len(payload) != 4:
            raise BadLength(f"sparse blob with no pairs has {len(payload)} payload bytes, not 4")
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if len(payload) == 4:
        raise BadLength(f"sparse blob declares {k} pairs but has no LZ4 block")
    total = k * (4 + width)
    block = len(payload) - 4
    if total > 256 * block or total > LZ4_MAX_INPUT_SIZE:  # LZ4 expands at most 255-fold
        raise BadLength(f"sparse blob declares {k} pairs ({total} bytes), more than its {block}-byte LZ4 block can hold")
    try:
        section = _lz4.decompress(payload[4:], uncompressed_size=total)
    except Exception as e:  # lz4.block.LZ4BlockError
        raise CorruptPayload(f"sparse LZ4 block does not decode to the {total} bytes of {k} pairs: {e}") from None
    if len(section) != total:
        raise CorruptPayload(f"sparse LZ4 block decodes to {len(section)} bytes, expected {total} for {k} pairs")
    deltas = np.frombuffer(_unshuffle(section[:4 * k], k, 4), dtype="<u4").astype(np.int64)
    indices = np.cumsum(deltas)
    repeated = np.flatnonzero(deltas[1:] == 0) + 1
    outside = np.flatnonzero(indices >= count)
    first_repeat = repeated[0] if len(repeated) else k
    first_outside = outside[0] if len(outside) else k
    if first_repeat < first_outside:
        j = int(first_repeat)
        raise InvalidIndex(
            f"pair {j} repeats index {indices[j - 1]} (delta 0; indices must be strictly increasing)")
    if first_outside < k:
        j = int(first_outside)
        hint = (f" (delta {deltas[j]} is a negative step written as u32: indices must be strictly increasing)"
                if deltas[j] >= 1 << 31 else "")
        raise InvalidIndex(f"pair {j}: index {indices[j]} is out of range for {count} elements{hint}")
    elements = _unshuffle(section[4 * k:], k, width)
    if header.dtype == Dtype.F32:
        values = np.frombuffer(elements, dtype="<f4").astype(np.float32)
    elif header.dtype == Dtype.BF16:
        values = _from_bf16(np.frombuffer(elements, dtype="<u2"))
    else:
        values = _from_f16(np.frombuffer(elements, dtype="<u2"))
    return indices, values


def decode_sparse(data: bytes | memoryview, expected_count: int | None = None,
                  max_count: int = DEFAULT_MAX_COUNT) -> tuple[BlobHeader, np.ndarray, np.ndarray]:
    """Validate and decode an untrusted blob as (header, indices, values), without making the
    dense vector when it is sparse-lz4 (a dense blob gives its elements whose bits are not +0).
    Every check of :func:`decode` is made."""
    header, payload = _checked(data, expected_count, max_count)
    if header.codec == Codec.SPARSE_LZ4:
        indices, values = _read_sparse(header, payload)
        return header, indices, values
    dense = decode(data, expected_count, max_count).values
    indices = np.flatnonzero(dense.view("<u4"))
    return header, indices, dense[indices]
