"""Jobs, layout, placement, the shard map and the training config.

See "Jobs, layout and placement" and "Training config" in docs/wire-format.md. Everything read
from Redis is validated; a violation raises :class:`SpecError` naming the field.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from .blob import Codec, Dtype
from .feedback import EncodingError, GradientEncoding
from . import keys as _keys
from .keys import check_job_id

__all__ = [
    "SpecError", "TensorSpec", "Layout", "ShardMap", "TrainingConfig",
    "fnv1a64", "splitmix64_finalize", "rendezvous_weight", "place_chunks", "object_shard",
    "parse_endpoint", "ClusterEndpoint", "format_node",
]

MASK = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GOLDEN = 0x9E3779B97F4A7C15
DEFAULT_CHUNK_ELEMENTS = 262144


class SpecError(ValueError):
    """A job spec, shard map, training config or endpoint that breaks a rule of the format."""


def fnv1a64(data: bytes, h: int = FNV_OFFSET) -> int:
    """FNV-1a-64 of ``data``, starting from ``h``."""
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def splitmix64_finalize(x: int) -> int:
    """The splitmix64 finalizer (including its increment), modulo 2^64."""
    z = (x + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _shard_seed(job: str, endpoint: str) -> int:
    return fnv1a64(endpoint.encode(), fnv1a64(job.encode()) ^ GOLDEN)


def rendezvous_weight(job: str, endpoint: str, chunk: int) -> int:
    """The weight of (chunk, shard); ``chunk`` may be any integer (taken as its 64 bits)."""
    return splitmix64_finalize(_shard_seed(job, endpoint) ^ ((chunk * 0xD6E8FEB86659FD93) & MASK))


def place_chunks(job: str, shards: list[str], num_chunks: int) -> list[int]:
    """Rendezvous hashing with bounded load: the shard index of every chunk."""
    k = len(shards)
    if k == 0:
        raise SpecError("no shards to place chunks on")
    base, extra = divmod(num_chunks, k)
    seeds = [_shard_seed(job, e) for e in shards]
    load = [0] * k
    full_plus = 0  # shards that reached base + 1
    assignment = []
    for c in range(num_chunks):
        mix = (c * 0xD6E8FEB86659FD93) & MASK
        best = None
        for i in range(k):
            if load[i] > base or (load[i] == base and full_plus >= extra):
                continue
            key = (splitmix64_finalize(seeds[i] ^ mix), _Neg(shards[i]))
            if best is None or key > best[0]:
                best = (key, i)
        i = best[1]
        load[i] += 1
        if load[i] == base + 1:
            full_plus += 1
        assignment.append(i)
    return assignment


class _Neg:
    """Orders strings in reverse, so that a max() prefers the smaller endpoint on ties."""

    __slots__ = ("s",)

    def __init__(self, s: str):
        self.s = s.encode()

    def __lt__(self, other: "_Neg") -> bool:
        return self.s > other.s

    def __gt__(self, other: "_Neg") -> bool:
        return self.s < other.s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Neg) and self.s == other.s


def object_shard(job: str, shards: list[str], name: str) -> int:
    """The shard index holding the named object ``smlt:{JOB}:obj:NAME``."""
    chunk = fnv1a64(name.encode())
    return max(range(len(shards)), key=lambda i: (rendezvous_weight(job, shards[i], chunk), _Neg(shards[i])))


#: A cluster lane's tag: 1-64 characters from A-Z a-z 0-9 . _ -
LANE_TAG = re.compile(r"[A-Za-z0-9._\-]{1,64}")


def format_node(node: tuple[str, int]) -> str:
    """``host:port`` (``[host]:port`` for an IPv6 address)."""
    return f"[{node[0]}]:{node[1]}" if ":" in node[0] else f"{node[0]}:{node[1]}"


@dataclass(frozen=True)
class ClusterEndpoint:
    """A Redis Cluster reached through ``seeds`` (TCP nodes), and with a ``tag`` one lane of it
    (``cluster://HOST:PORT[,HOST:PORT...]/TAG``, see "Redis Cluster" in docs/wire-format.md).
    Without a tag it names the whole cluster, which is not a shard."""

    seeds: tuple[tuple[str, int], ...]
    tag: str | None = None

    def lane(self, tag: str) -> "ClusterEndpoint":
        """The lane ``tag`` of this cluster, through the same seeds."""
        return ClusterEndpoint(self.seeds, tag)

    def __str__(self) -> str:
        return "cluster://" + ",".join(map(format_node, self.seeds)) + (f"/{self.tag}" if self.tag else "")


def parse_endpoint(endpoint: str) -> tuple[str, int] | str | ClusterEndpoint:
    """``(host, port)`` for ``host:port`` / ``[ipv6]:port``, the path for ``unix:/path``, or a
    :class:`ClusterEndpoint` for ``cluster://HOST:PORT[,HOST:PORT...][/TAG]``."""
    if not isinstance(endpoint, str) or not endpoint or any(c.isspace() for c in endpoint):
        raise SpecError(f"invalid endpoint {endpoint!r}")
    if endpoint.startswith("cluster://"):
        rest, slash, tag = endpoint[len("cluster://"):].partition("/")
        if slash and not LANE_TAG.fullmatch(tag):
            raise SpecError(f"invalid endpoint {endpoint!r}: a cluster lane tag is 1 to 64 characters "
                            "from A-Z a-z 0-9 . _ -")
        seeds = []
        for part in rest.split(","):
            seed = parse_endpoint(part) if part else None
            if not isinstance(seed, tuple):
                raise SpecError(f"invalid endpoint {endpoint!r}: expected cluster://HOST:PORT[,HOST:PORT...][/TAG] "
                                "(cluster seed nodes are host:port)")
            seeds.append(seed)
        return ClusterEndpoint(tuple(seeds), tag if slash else None)
    if endpoint.startswith("unix:"):
        path = endpoint[5:]
        if not path.startswith("/"):
            raise SpecError(f"invalid endpoint {endpoint!r}: unix:/absolute/path")
        return path
    if endpoint.startswith("["):
        host, sep, port = endpoint[1:].partition("]:")
        if not sep or ":" not in host:
            raise SpecError(f"invalid endpoint {endpoint!r}: expected [ipv6]:port")
    else:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or ":" in host:
            raise SpecError(f"invalid endpoint {endpoint!r}: expected host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError(f"invalid port in endpoint {endpoint!r}")
    return host, int(port)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def json_object(data: str | bytes, what: str) -> dict:
    """Parse `data` as a JSON object; raises :class:`SpecError` naming `what` otherwise."""
    try:
        obj = json.loads(data)
    except ValueError as e:  # UnicodeDecodeError is a ValueError too
        raise SpecError(f"{what} is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise SpecError(f"{what} is not a JSON object")
    return obj


def _int_field(obj: dict, name: str, lo: int, hi: int | None, what: str, default=None) -> int:
    if name not in obj:
        if default is not None:
            return default
        raise SpecError(f"{what}: missing field {name!r}")
    v = obj[name]
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        bound = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        raise SpecError(f"{what}: {name!r} is {v!r}, expected an integer {bound}")
    return v


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of the job, with its shape (row-major f32)."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape)}


def _parse_tensors(value, what: str) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{what}: 'tensors' must be a non-empty array")
    out, seen = [], set()
    for i, t in enumerate(value):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise SpecError(f"{what}: tensor {i} needs a non-empty string 'name'")
        name, shape = t["name"], t.get("shape")
        if name in seen:
            raise SpecError(f"{what}: tensor name {name!r} appears twice")
        seen.add(name)
        if not isinstance(shape, list) or not shape or not all(_is_int(d) and 1 <= d <= 1 << 31 for d in shape):
            raise SpecError(f"{what}: tensor {name!r} has shape {shape!r}; need at least one dimension, each 1-2^31")
        if math.prod(shape) > 1 << 34:
            raise SpecError(f"{what}: tensor {name!r} has more than 2^34 elements")
        out.append(TensorSpec(name, tuple(shape)))
    return tuple(out)


@dataclass(frozen=True)
class Layout:
    """The flat f32 parameter space of a job's tensors, cut into chunks."""

    tensors: tuple[TensorSpec, ...]
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS

    @property
    def total(self) -> int:
        """Elements of the flat parameter space."""
        return sum(t.size for t in self.tensors)

    @property
    def num_chunks(self) -> int:
        return -(-self.total // self.chunk_elements)

    def chunk_range(self, chunk: int) -> range:
        """The flat elements of chunk ``chunk``."""
        start = chunk * self.chunk_elements
        return range(start, min(self.total, start + self.chunk_elements))


@dataclass(frozen=True)
class ShardMap:
    """A job's shard map (``smlt:{JOB}:map``)."""

    job: str
    epoch: int
    shards: tuple[str, ...]
    assignment: tuple[int, ...]
    tensors: tuple[TensorSpec, ...]
    chunk_elements: int
    codec: Codec
    #: The low-precision copy of every version that workers pull instead of ``params`` (a dense
    #: bf16 or f16 encoding); None when they pull ``params``.
    pull_encoding: GradientEncoding | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.tensors, self.chunk_elements)

    @property
    def pulled_key(self):
        """The key function of what workers pull: :func:`keys.pull_copy` or :func:`keys.params`."""
        return _keys.pull_copy if self.pull_encoding is not None else _keys.params

    def chunks_of(self, shard: int) -> list[int]:
        """The chunks assigned to shard index ``shard``, in order."""
        return [c for c, s in enumerate(self.assignment) if s == shard]

    @classmethod
    def create(cls, job: str, shards: list[str], tensors: list[TensorSpec], chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
               codec: Codec | str = Codec.RAW, epoch: int = 1, pull_encoding: str | None = None) -> "ShardMap":
        """Place a new job's chunks on ``shards`` (shard 0 is the home shard) and validate the result.
        ``pull_encoding`` (e.g. ``"bf16"``) makes the job keep a pull copy of every version."""
        m = {"job": job, "epoch": epoch, "shards": list(shards), "assignment": [],
             "tensors": [t.to_json() for t in tensors], "chunk_elements": chunk_elements,
             "codec": Codec.parse(codec).wire_name}
        if pull_encoding is not None:
            m["pull_encoding"] = pull_encoding
        layout = Layout(_parse_tensors(m["tensors"], "job spec"), _int_field(m, "chunk_elements", 1, 1 << 26, "job spec"))
        m["assignment"] = place_chunks(job, list(shards), layout.num_chunks)
        return cls.from_json(json.dumps(m))

    @classmethod
    def from_json(cls, data: str | bytes) -> "ShardMap":
        """Parse and validate a map; raises :class:`SpecError` naming the bad field."""
        what = "shard map"
        m = json_object(data, what)
        for f in ("job", "epoch", "shards", "assignment", "tensors", "chunk_elements", "codec"):
            if f not in m:
                raise SpecError(f"{what}: missing field {f!r}")
        try:
            job = check_job_id(m["job"])
        except ValueError as e:
            raise SpecError(f"{what}: {e}") from None
        epoch = _int_field(m, "epoch", 1, None, what)
        shards = m["shards"]
        if not isinstance(shards, list) or not shards or not all(isinstance(s, str) for s in shards):
            raise SpecError(f"{what}: 'shards' must be a non-empty array of strings")
        if len(set(shards)) != len(shards):
            raise SpecError(f"{what}: 'shards' names an endpoint twice")
        tags = []
        for s in shards:
            where = parse_endpoint(s)
            if isinstance(where, ClusterEndpoint):
                if where.tag is None:
                    raise SpecError(f"{what}: 'shards' names the whole cluster {s}; a shard of a cluster is a "
                                    "lane cluster://SEEDS/TAG")
                tags.append(where.tag)
        if len(set(tags)) != len(tags):
            raise SpecError(f"{what}: 'shards' names a cluster lane twice (lanes are the same shard by tag)")
        tensors = _parse_tensors(m["tensors"], what)
        chunk_elements = _int_field(m, "chunk_elements", 1, 1 << 26, what)
        try:
            codec = Codec.parse(m["codec"]) if isinstance(m["codec"], str) else None
        except ValueError:
            codec = None
        if codec is None:
            raise SpecError(f"{what}: 'codec' is {m['codec']!r}, expected raw, lz4, shuffle-lz4 or bitshuffle-lz4")
        layout = Layout(tensors, chunk_elements)
        a = m["assignment"]
        if not isinstance(a, list) or len(a) != layout.num_chunks:
            raise SpecError(f"{what}: 'assignment' must have one entry per chunk ({layout.num_chunks})")
        if not all(_is_int(i) and 0 <= i < len(shards) for i in a):
            raise SpecError(f"{what}: 'assignment' has an entry that is not a shard index 0..<{len(shards)}")
        pull = None
        if "pull_encoding" in m:
            pull = _pull_encoding(m["pull_encoding"], what)
        return cls(job, epoch, tuple(shards), tuple(a), tensors, chunk_elements, codec, pull)

    def to_json(self) -> str:
        m = {"job": self.job, "epoch": self.epoch, "shards": list(self.shards),
             "assignment": list(self.assignment), "tensors": [t.to_json() for t in self.tensors],
             "chunk_elements": self.chunk_elements, "codec": self.codec.wire_name}
        if self.pull_encoding is not None:
            m["pull_encoding"] = f"{self.pull_encoding.dtype.wire_name}-{self.pull_encoding.codec.wire_name}"
        return json.dumps(m)


def _pull_encoding(value, what: str) -> GradientEncoding:
    """A map's ``pull_encoding``: a dense encoding of dtype bf16 or f16 (not sparse, not f32)."""
    if not isinstance(value, str):
        raise SpecError(f"{what}: 'pull_encoding' is {value!r}, expected a string such as \"bf16\"")
    try:
        e = GradientEncoding.parse(value)
    except EncodingError as err:
        raise SpecError(f"{what}: 'pull_encoding': {err}") from None
    if e.topk is not None or e.codec == Codec.SPARSE_LZ4:
        raise SpecError(f"{what}: 'pull_encoding' {value!r} is not dense; use e.g. bf16 or bf16-shuffle-lz4")
    if e.dtype == Dtype.F32:
        raise SpecError(f"{what}: 'pull_encoding' {value!r} is f32; a pull copy must be bf16 or f16")
    return e


@dataclass(frozen=True)
class TrainingConfig:
    """The training config (``smlt:{JOB}:train``)."""

    workers: int
    steps: int
    learning_rate: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    checkpoint_every: int = 0
    workload: dict[str, str] = field(default_factory=dict)
    #: How workers encode gradients (see :mod:`smlt.feedback`); None: f32 with the map's codec.
    gradient_encoding: str | None = None

    def __post_init__(self):
        TrainingConfig.from_json(self.to_json())  # validate

    @classmethod
    def from_json(cls, data: str | bytes) -> "TrainingConfig":
        """Parse and validate a config; raises :class:`SpecError` naming the bad field."""
        what = "training config"
        c = json_object(data, what)
        workers = _int_field(c, "workers", 1, 4096, what)
        steps = _int_field(c, "steps", 0, None, what)
        numbers = {}
        for f in ("learning_rate", "momentum", "weight_decay"):
            if f not in c:
                raise SpecError(f"{what}: missing field {f!r}")
            if not _is_number(c[f]):
                raise SpecError(f"{what}: {f!r} is {c[f]!r}, expected a finite number")
            numbers[f] = float(c[f])
        every = _int_field(c, "checkpoint_every", 0, None, what, default=0)
        workload = c.get("workload", {})
        if not isinstance(workload, dict) or not all(isinstance(v, str) for v in workload.values()):
            raise SpecError(f"{what}: 'workload' must be an object whose every value is a string")
        encoding = c.get("gradient_encoding")
        if encoding is not None:
            try:
                GradientEncoding.parse(encoding)
            except EncodingError as e:
                raise SpecError(f"{what}: {e}") from None
        obj = cls.__new__(cls)
        for k, v in dict(workers=workers, steps=steps, checkpoint_every=every, workload=dict(workload),
                         gradient_encoding=encoding, **numbers).items():
            object.__setattr__(obj, k, v)
        return obj

    def to_json(self) -> str:
        return json.dumps({"workers": self.workers, "steps": self.steps, "learning_rate": self.learning_rate,
                           "momentum": self.momentum, "weight_decay": self.weight_decay,
                           "checkpoint_every": self.checkpoint_every, "workload": self.workload,
                           **({} if self.gradient_encoding is None else
                              {"gradient_encoding": self.gradient_encoding})})

    def encoding(self, map_codec: Codec | str) -> GradientEncoding:
        """The encoding workers push with: ``gradient_encoding``, or f32 with the map's codec."""
        if self.gradient_encoding is None:
            return GradientEncoding(Dtype.F32, Codec.parse(map_codec))
        return GradientEncoding.parse(self.gradient_encoding)
