"""Named tensors (a dict of float32 arrays) to and from the flat, chunked parameter space."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .layout import Layout, TensorSpec

__all__ = ["specs_of", "flatten", "unflatten", "split_chunks", "join_chunks"]


def specs_of(named: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    """Tensor specs for ``named`` in its iteration order (which becomes the layout order)."""
    return [TensorSpec(name, tuple(int(d) for d in np.shape(a))) for name, a in named.items()]


def flatten(named: Mapping[str, np.ndarray], layout: Layout) -> np.ndarray:
    """The flat float32 parameter space: every tensor of ``layout`` in order, row-major.

    ``named`` must hold exactly the layout's tensors, each of its shape; values are cast to
    float32 only when that is exact.
    """
    names = {t.name for t in layout.tensors}
    if set(named) != names:
        missing, extra = sorted(names - set(named)), sorted(set(named) - names)
        raise ValueError(f"tensors do not match the layout: missing {missing}, unexpected {extra}")
    flat = np.empty(layout.total, dtype=np.float32)
    offset = 0
    for t in layout.tensors:
        a = np.asarray(named[t.name])
        if a.shape != t.shape:
            raise ValueError(f"tensor {t.name!r} has shape {a.shape}, the layout says {t.shape}")
        if a.dtype != np.float32:
            cast = a.astype(np.float32)
            if not np.array_equal(cast, a, equal_nan=True):
                raise ValueError(f"tensor {t.name!r} of dtype {a.dtype} is not exactly representable as float32")
            a = cast
        flat[offset:offset + t.size] = a.reshape(-1)
        offset += t.size
    return flat


def unflatten(flat: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Named float32 arrays (copies) from a flat parameter space of ``layout.total`` elements."""
    flat = np.asarray(flat, dtype=np.float32).reshape(-1)
    if flat.size != layout.total:
        raise ValueError(f"flat parameter space has {flat.size} elements, the layout {layout.total}")
    out, offset = {}, 0
    for t in layout.tensors:
        out[t.name] = flat[offset:offset + t.size].reshape(t.shape).copy()
        offset += t.size
    return out


def split_chunks(flat: np.ndarray, layout: Layout) -> list[np.ndarray]:
    """The chunks of a flat parameter space (views), chunk ``c`` at index ``c``."""
    flat = np.asarray(flat, dtype=np.float32).reshape(-1)
    if flat.size != layout.total:
        raise ValueError(f"flat parameter space has {flat.size} elements, the layout {layout.total}")
    return [flat[r.start:r.stop] for r in (layout.chunk_range(c) for c in range(layout.num_chunks))]


def join_chunks(chunks: list[np.ndarray], layout: Layout) -> np.ndarray:
    """The flat parameter space from its chunks, each checked against the layout's chunk size."""
    if len(chunks) != layout.num_chunks:
        raise ValueError(f"{len(chunks)} chunks, the layout has {layout.num_chunks}")
    flat = np.empty(layout.total, dtype=np.float32)
    for c, chunk in enumerate(chunks):
        r = layout.chunk_range(c)
        if np.size(chunk) != len(r):
            raise ValueError(f"chunk {c} has {np.size(chunk)} elements, the layout {len(r)}")
        flat[r.start:r.stop] = np.asarray(chunk, dtype=np.float32).reshape(-1)
    return flat
