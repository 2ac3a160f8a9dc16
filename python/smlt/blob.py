"""Tensor blobs: the 48-byte header plus payload that holds every tensor value in Redis.

See "Tensor blobs" in docs/wire-format.md. :func:`encode` writes a blob, :func:`decode` reads an
untrusted one and raises a :class:`BlobError` subclass that names what is wrong. Blobs of dtype
``bf16`` and ``f16`` are written from float32 values rounded to nearest even and read back as
float32, bit for bit as SMLT's Swift code does (:func:`round_to`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import crc32c as _crc32c
import lz4.block as _lz4
import numpy as np

__all__ = [
    "Codec", "Dtype", "BlobHeader", "Blob", "encode", "decode", "parse_header", "round_to",
    "BlobError", "TruncatedBlob", "BadHeader", "BlobTooLarge", "BadLength",
    "UnsupportedDtype", "ChecksumMismatch", "CorruptPayload", "CountMismatch",
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
        """The LZ4 acceleration SMLT's writers use (1 for f32, 48 for the 2-byte dtypes)."""
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

    @property
    def wire_name(self) -> str:
        """The name used in job specs and maps: ``raw``, ``lz4`` or ``shuffle-lz4``."""
        return ("raw", "lz4", "shuffle-lz4")[self.value]

    @classmethod
    def parse(cls, value: "Codec | str | int") -> "Codec":
        """A codec from its wire name (``"shuffle-lz4"``), its byte, or a Codec."""
        if isinstance(value, Codec):
            return value
        if isinstance(value, str):
            for c in cls:
                if c.wire_name == value:
                    return c
            raise ValueError(f"unknown codec {value!r}: expected raw, lz4 or shuffle-lz4")
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
    if codec != Codec.RAW and 0 < len(raw) <= LZ4_MAX_INPUT_SIZE:
        source = _shuffle(raw, count, dtype.width) if codec == Codec.SHUFFLE_LZ4 else raw
        compressed = _lz4.compress(source, mode="fast", acceleration=dtype.lz4_acceleration, store_size=False)
        if len(compressed) < len(raw):
            payload, used = compressed, codec
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, dtype, used, 0, count, step, producer, 0, len(payload))
    return head + struct.pack("<II", _crc(head, payload), 0) + payload


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
    if codec > 2:
        raise BadHeader(f"unknown codec byte {codec}, expected 0-2")
    if flags != 0:
        raise BadHeader(f"flags byte is {flags}, must be 0")
    if reserved1 != 0:
        raise BadHeader(f"reserved bytes 28-31 are {reserved1:#x}, must be 0")
    if reserved2 != 0:
        raise BadHeader(f"reserved bytes 44-47 are {reserved2:#x}, must be 0")
    if count > max_count:
        raise BlobTooLarge(f"blob claims {count} elements, more than the limit of {max_count}")
    return BlobHeader(version, Dtype(dtype), Codec(codec), count, step, producer, length, checksum)


def decode(data: bytes | memoryview, expected_count: int | None = None,
           max_count: int = DEFAULT_MAX_COUNT) -> Blob:
    """Validate and decode an untrusted blob.

    ``expected_count`` is the element count the reader knows from the layout (a chunk's size);
    a blob of another size raises :class:`CountMismatch`. Every check of "Validation" in
    docs/wire-format.md is made, the checksum before any decompression.
    """
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
    elif present == 0 or present >= raw_size:
        raise BadLength(
            f"{header.codec.wire_name} payload is {present} bytes; it must be non-empty and smaller than "
            f"the {raw_size} raw bytes")
    head = bytes(data[:40])
    payload = bytes(data[HEADER_SIZE:])
    actual = _crc(head, payload)
    if actual != header.checksum:
        raise ChecksumMismatch(f"checksum {header.checksum:#010x} does not match the content's {actual:#010x}")
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
    if header.dtype == Dtype.F32:
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
    elif header.dtype == Dtype.BF16:
        values = _from_bf16(np.frombuffer(raw, dtype="<u2"))
    else:
        values = _from_f16(np.frombuffer(raw, dtype="<u2"))
    return Blob(header, values)
