"""Gradient encodings and error feedback ("Gradient encodings and error feedback" in
docs/wire-format.md).

A training config's ``gradient_encoding`` says which dtype and codec workers push gradients with.
With a lossy one (bf16, f16) a worker pushes ``q = round(g + r)`` and keeps ``r' = (g + r) - q``
as the residual of its next step, stored as the named object ``residual-W-P`` (P = step mod 2).
Every operation is one float32 addition or subtraction per element, so this module computes the
same bits as SMLT's Swift worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .blob import Codec, Dtype, round_to

__all__ = ["GradientEncoding", "EncodingError", "apply_feedback", "residual_name", "EXAMPLES"]

EXAMPLES = "raw, lz4, shuffle-lz4, bf16, f16, bf16-shuffle-lz4, f16-shuffle-lz4"
_DTYPES = {"f32": Dtype.F32, "f16": Dtype.F16, "bf16": Dtype.BF16}
_CODECS = {"raw": Codec.RAW, "lz4": Codec.LZ4, "shuffle-lz4": Codec.SHUFFLE_LZ4}


class EncodingError(ValueError):
    """A ``gradient_encoding`` spec that names no encoding."""


@dataclass(frozen=True)
class GradientEncoding:
    """The dtype and codec of pushed gradient blobs."""

    dtype: Dtype
    codec: Codec

    @classmethod
    def parse(cls, spec: str) -> "GradientEncoding":
        """``CODEC`` (f32), ``DTYPE`` (codec raw) or ``DTYPE-CODEC``; raises :class:`EncodingError`."""
        if not isinstance(spec, str):
            raise EncodingError(f"gradient encoding {spec!r} is not a string (use one of {EXAMPLES})")
        if spec in _CODECS:
            return cls(Dtype.F32, _CODECS[spec])
        if spec in _DTYPES:
            return cls(_DTYPES[spec], Codec.RAW)
        for name, dtype in _DTYPES.items():
            if spec.startswith(name + "-"):
                rest = spec[len(name) + 1:]
                if rest not in _CODECS:
                    raise EncodingError(f"gradient encoding {spec!r}: unknown codec {rest!r} after {name + '-'!r} "
                                        f"(use one of {EXAMPLES})")
                return cls(dtype, _CODECS[rest])
        raise EncodingError(f"gradient encoding {spec!r}: not an encoding (use one of {EXAMPLES})")

    @property
    def lossy(self) -> bool:
        """Whether the servers read other values than were pushed (error feedback applies)."""
        return self.dtype != Dtype.F32

    @property
    def spec(self) -> str:
        """The canonical spec (``lz4``, ``bf16-raw``, ``bf16-shuffle-lz4``)."""
        return self.codec.wire_name if self.dtype == Dtype.F32 else f"{self.dtype.wire_name}-{self.codec.wire_name}"


def apply_feedback(gradient: np.ndarray, residual: np.ndarray | None,
                   encoding: GradientEncoding) -> tuple[np.ndarray, np.ndarray | None]:
    """``(q, r')``: the values to push (as the servers will read them) and the next residual
    (None for a lossless encoding). ``gradient`` and ``residual`` are flat float32."""
    g = np.ascontiguousarray(gradient, dtype=np.float32).reshape(-1)
    if not encoding.lossy:
        return g, None
    v = g if residual is None else g + np.ascontiguousarray(residual, dtype=np.float32).reshape(-1)
    q = round_to(v, encoding.dtype)
    return q, (v - q).astype(np.float32, copy=False)


def residual_name(worker: int, step: int) -> str:
    """The named object that holds worker ``worker``'s residual for step ``step``."""
    return f"residual-{worker}-{step % 2}"
