"""Gradient encodings and error feedback ("Gradient encodings and error feedback" in
docs/wire-format.md).

A training config's ``gradient_encoding`` says which dtype and codec workers push gradients with.
With a lossy one (bf16, f16, top-k) a worker pushes ``q = encode(g + r)`` (rounded; with top-k
only the largest elements of each chunk) and keeps ``r' = (g + r) - q`` as the residual of its
next step, stored as the named object ``residual-W-P`` (P = step mod 2).
Every operation is one float32 addition or subtraction per element, so this module computes the
same bits as SMLT's Swift worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .blob import Codec, Dtype, round_to, topk_indices

__all__ = ["GradientEncoding", "EncodingError", "apply_feedback", "residual_name", "residual_part_name", "residual_codec",
           "checkpoint_residual_name", "EXAMPLES"]

EXAMPLES = ("raw, lz4, shuffle-lz4, bitshuffle-lz4, bf16, f16, bf16-shuffle-lz4, bf16-bitshuffle-lz4, "
            "f16-shuffle-lz4, topk:FRACTION, bf16-topk:FRACTION")
_DTYPES = {"f32": Dtype.F32, "f16": Dtype.F16, "bf16": Dtype.BF16}
_CODECS = {"raw": Codec.RAW, "lz4": Codec.LZ4, "shuffle-lz4": Codec.SHUFFLE_LZ4,
           "bitshuffle-lz4": Codec.BITSHUFFLE_LZ4, "sparse-lz4": Codec.SPARSE_LZ4}
_NUMBER = set("0123456789.eE+-")


class EncodingError(ValueError):
    """A ``gradient_encoding`` spec that names no encoding, or a top-k fraction outside (0, 1]."""


@dataclass(frozen=True)
class GradientEncoding:
    """The dtype and codec of pushed gradient blobs; with ``topk`` set, the ``ceil(topk × n)``
    elements of largest magnitude of each chunk (as sparse-lz4 blobs)."""

    dtype: Dtype
    codec: Codec
    topk: float | None = None

    @classmethod
    def parse(cls, spec: str) -> "GradientEncoding":
        """``CODEC`` (f32), ``DTYPE`` (codec raw), ``DTYPE-CODEC``, ``topk:FRACTION`` or
        ``DTYPE-topk:FRACTION``; raises :class:`EncodingError`."""
        if not isinstance(spec, str):
            raise EncodingError(f"gradient encoding {spec!r} is not a string (use one of {EXAMPLES})")
        if ":" in spec:
            name, number = spec.split(":", 1)
            if name == "topk":
                dtype = Dtype.F32
            elif name.endswith("-topk") and name[:-5] in _DTYPES:
                dtype = _DTYPES[name[:-5]]
            else:
                raise EncodingError(f"unknown gradient encoding {spec!r} (use one of {EXAMPLES})")
            try:
                if not number or not set(number) <= _NUMBER:
                    raise ValueError
                fraction = float(number)
            except ValueError:
                raise EncodingError(f"top-k fraction {number!r} in {spec!r} is not a number; use e.g. topk:0.01") \
                    from None
            if not 0 < fraction <= 1:
                raise EncodingError(f"{spec!r}: top-k fraction {fraction} is outside (0, 1]")
            return cls(dtype, Codec.SPARSE_LZ4, fraction)
        if spec in _CODECS:
            return cls(Dtype.F32, _CODECS[spec])
        if spec in _DTYPES:
            return cls(_DTYPES[spec], Codec.RAW)
        if "-" in spec:
            name, rest = spec.split("-", 1)
            if name in _DTYPES and rest in _CODECS:
                return cls(_DTYPES[name], _CODECS[rest])
        raise EncodingError(f"unknown gradient encoding {spec!r} (use one of {EXAMPLES})")

    @property
    def lossy(self) -> bool:
        """Whether the servers read other values than the worker had (error feedback applies)."""
        return self.dtype != Dtype.F32 or (self.topk is not None and self.topk < 1)

    @property
    def spec(self) -> str:
        """The canonical spec (``lz4``, ``bf16-raw``, ``bf16-shuffle-lz4``, ``topk:0.01``)."""
        if self.topk is not None:
            return ("" if self.dtype == Dtype.F32 else f"{self.dtype.wire_name}-") + f"topk:{self.topk!r}"
        return self.codec.wire_name if self.dtype == Dtype.F32 else f"{self.dtype.wire_name}-{self.codec.wire_name}"


def apply_feedback(gradient: np.ndarray, residual: np.ndarray | None, encoding: GradientEncoding,
                   chunk_elements: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(q, r')``: the values to push (as the servers will read them; zero where top-k sent
    nothing) and the next residual (None for a lossless encoding). ``gradient`` and ``residual``
    are flat float32; top-k selects in each chunk of ``chunk_elements`` on its own."""
    g = np.ascontiguousarray(gradient, dtype=np.float32).reshape(-1)
    if not encoding.lossy:
        return g, None
    v = g if residual is None else g + np.ascontiguousarray(residual, dtype=np.float32).reshape(-1)
    if encoding.topk is None:
        q = round_to(v, encoding.dtype)
    else:
        if chunk_elements is None:
            raise ValueError("top-k error feedback needs the job's chunk_elements")
        q = np.zeros_like(v)
        for start in range(0, v.size, chunk_elements):
            part = v[start:start + chunk_elements]
            idx = topk_indices(part, encoding.topk).astype(np.int64)
            q[start + idx] = round_to(part[idx], encoding.dtype)
    return q, (v - q).astype(np.float32, copy=False)


def residual_codec(encoding: GradientEncoding) -> Codec:
    """The codec a worker stores ``encoding``'s residual with (an f32 blob; readers take any codec):
    ``bitshuffle-lz4`` for a dense bf16 or f16 encoding (a rounding's residual has its low
    significand bits zero, which bit planes store in a few bytes), ``raw`` for top-k (whose
    residual is the unsent gradient), as SMLT's Swift workers do (docs/wire-format.md, "Gradient
    encodings and error feedback")."""
    return Codec.RAW if encoding.topk is not None else Codec.BITSHUFFLE_LZ4


def residual_name(worker: int, step: int) -> str:
    """The name of worker ``worker``'s residual for step ``step``, as its progress names it; the
    residual itself is stored in parts (:func:`residual_part_name`)."""
    return f"residual-{worker}-{step % 2}"


def checkpoint_residual_name(worker: int, version: int, every: int) -> str:
    """The copy of worker ``worker``'s residual for checkpoint version ``version`` (a multiple of
    ``checkpoint_every`` = ``every``), stored in parts like the residual, by the push that stores
    that version's residual."""
    return f"ckpt-residual-{worker}-{version // max(every, 1) % 2}"


def residual_part_name(name: str, part: int) -> str:
    """The named object holding part ``part`` of residual ``name``: its elements of chunk ``part``."""
    return f"{name}.{part}"
