"""Connections to a job's shards, opening a job, reading its parameters, and registering a job
from named numpy arrays as a driver (see "Registering and starting a job" in docs/wire-format.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np
import redis

from . import keys
from .blob import PRODUCER_SERVER, Codec, decode, encode
from .lanes import LaneRedis, cluster_nodes, record_lanes, registered_lanes
from .layout import (DEFAULT_CHUNK_ELEMENTS, ClusterEndpoint, ShardMap, SpecError, TrainingConfig, object_shard,
                     parse_endpoint)
from .tensors import flatten, join_chunks, specs_of, split_chunks, unflatten

__all__ = ["SMLTError", "JobNotFound", "JobExists", "UntrustedEndpoint", "connect", "Job", "register_job"]

#: Largest map and config a reader accepts (as the servers do).
MAX_MAP_BYTES = 4 << 20
MAX_CONFIG_BYTES = 1 << 20


class SMLTError(RuntimeError):
    """A job's state in Redis that does not allow the operation."""


class JobNotFound(SMLTError):
    """No map or no training config for the job."""


class JobExists(SMLTError):
    """Registering a job whose map already exists on a shard."""


class UntrustedEndpoint(SMLTError):
    """A shard map names an endpoint the client was not given, and a password is in use."""


def connect(endpoint: str, password: str | None = None, user: str | None = None,
            socket_timeout: float | None = 30.0) -> redis.Redis:
    """A Redis connection to one shard: ``host:port``, ``[ipv6]:port``, ``unix:/path``, or a
    cluster lane ``cluster://HOST:PORT[,...]/TAG`` (a :class:`smlt.lanes.LaneRedis`: every key
    gets the lane's ``{TAG}`` in front, and commands follow the lane's master)."""
    where = parse_endpoint(endpoint)
    if isinstance(where, ClusterEndpoint):
        if where.tag is None:
            raise SpecError(f"{endpoint} names a whole Redis Cluster, not a shard; a shard of it is a lane "
                            "cluster://SEEDS/TAG (Job.open finds a job's lanes from the whole cluster)")
        return LaneRedis(where, password, user, socket_timeout)
    common = dict(password=password, username=user, socket_timeout=socket_timeout)
    if isinstance(where, str):
        return redis.Redis(unix_socket_path=where, **common)
    return redis.Redis(host=where[0], port=where[1], **common)


class Job:
    """An open job: its shard map, its training config and a connection per shard.

    Open it with :meth:`Job.open`. Connections are made on first use; call :meth:`close`.
    """

    def __init__(self, shard_map: ShardMap, config: TrainingConfig, password: str | None = None,
                 user: str | None = None, allowed: Iterable[str] = ()):
        self.map = shard_map
        self.config = config
        self._password, self._user = password, user
        self._allowed = set(allowed)
        self._conns: dict[str, redis.Redis] = {}
        if password is not None:
            strangers = _untrusted(shard_map.shards, self._allowed, password, user)
            if strangers:
                raise UntrustedEndpoint(
                    f"job {shard_map.job}'s map names endpoints that were not given: {', '.join(strangers)}")

    @property
    def job(self) -> str:
        return self.map.job

    @classmethod
    def open(cls, endpoints: list[str], job: str, password: str | None = None, user: str | None = None,
             allowed: Iterable[str] = ()) -> "Job":
        """Load the map (the home shard's copy wins) and the home shard's config.

        A whole Redis Cluster among ``endpoints`` (``cluster://SEEDS``) stands for the lanes
        recorded on it (``smlt:lanes``)."""
        keys.check_job_id(job)
        allowed = set(endpoints) | set(allowed)
        found = None
        for e in expand_clusters(endpoints, password, user):
            conn = connect(e, password, user)
            try:
                raw = _get_bounded(conn, keys.map_key(job), MAX_MAP_BYTES, "map")
            finally:
                conn.close()
            if raw is not None:
                found = ShardMap.from_json(raw)
                break
        if found is None:
            raise JobNotFound(f"job {job} has no shard map on {', '.join(endpoints)}")
        if found.job != job:
            raise SpecError(f"the map under job {job}'s key names job {found.job!r}")
        probe = cls(found, TrainingConfig(1, 0, 0.0), password, user, allowed)
        home = probe.shard(0)
        raw = _get_bounded(home, keys.map_key(job), MAX_MAP_BYTES, "map")
        if raw is not None:
            found = ShardMap.from_json(raw)
        cfg = _get_bounded(home, keys.train_key(job), MAX_CONFIG_BYTES, "training config")
        probe.close()
        if cfg is None:
            raise JobNotFound(f"job {job} has no training config on its home shard {found.shards[0]}")
        return cls(found, TrainingConfig.from_json(cfg), password, user, allowed)

    def shard(self, index: int) -> redis.Redis:
        """The connection to shard ``index`` of the map."""
        endpoint = self.map.shards[index]
        if endpoint not in self._conns:
            self._conns[endpoint] = connect(endpoint, self._password, self._user)
        return self._conns[endpoint]

    def new_connection(self, index: int) -> redis.Redis:
        """A separate connection to shard ``index`` (for a thread of its own)."""
        return connect(self.map.shards[index], self._password, self._user)

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def object_shard(self, name: str) -> int:
        """The shard index of the named object ``name``."""
        return object_shard(self.job, list(self.map.shards), name)

    def get_object(self, name: str) -> bytes | None:
        return self.shard(self.object_shard(name)).get(keys.obj(self.job, name))

    def set_object(self, name: str, value: bytes | str) -> None:
        self.shard(self.object_shard(name)).set(keys.obj(self.job, name), value)

    def version(self, shard: int) -> int | None:
        """The newest version published on shard ``shard`` (None: no entry yet)."""
        entries = self.shard(shard).xrevrange(keys.versions(self.job, shard), count=1)
        return int(entries[0][1][b"version"]) if entries else None

    def wait_version(self, version: int, timeout: float = 60.0) -> None:
        """Wait until every shard has published ``version`` or later; TimeoutError otherwise."""
        end = time.monotonic() + timeout
        while True:
            seen = [self.version(i) for i in range(len(self.map.shards))]
            if all(v is not None and v >= version for v in seen):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"job {self.job}: shards are at versions {seen}, waited for {version}")
            time.sleep(0.02)

    def read_chunks(self, key=keys.params) -> list[tuple[int, np.ndarray]]:
        """``(header step, values)`` of every chunk's blob under ``key(job, chunk)`` (validated)."""
        layout = self.map.layout
        out: list = [None] * layout.num_chunks
        for i in range(len(self.map.shards)):
            chunks = self.map.chunks_of(i)
            pipe = self.shard(i).pipeline(transaction=False)
            for c in chunks:
                pipe.get(key(self.job, c))
            for c, raw in zip(chunks, pipe.execute()):
                if raw is None:
                    raise SMLTError(f"job {self.job}: chunk {c} has no {key(self.job, c)}")
                b = decode(raw, expected_count=len(layout.chunk_range(c)))
                out[c] = (b.header.step, b.values)
        return out

    def read_parameters(self) -> tuple[int, dict[str, np.ndarray]]:
        """The current version and the named parameters; every chunk must be at one version."""
        chunks = self.read_chunks()
        steps = {s for s, _ in chunks}
        if len(steps) != 1:
            raise SMLTError(f"job {self.job}: chunks are at different versions {sorted(steps)} (training?)")
        flat = join_chunks([v for _, v in chunks], self.map.layout)
        return steps.pop(), unflatten(flat, self.map.layout)


def expand_clusters(endpoints: Iterable[str], password: str | None = None, user: str | None = None) -> list[str]:
    """``endpoints`` with every whole cluster (``cluster://SEEDS``) replaced by its recorded lanes."""
    out: list[str] = []
    for e in endpoints:
        where = parse_endpoint(e)
        if isinstance(where, ClusterEndpoint) and where.tag is None:
            out += registered_lanes(where, password, user)
        else:
            out.append(e)
    return out


def _untrusted(shards: Iterable[str], allowed: set[str], password: str | None, user: str | None) -> list[str]:
    """The shards of a map that credentials must not be sent to (as ShardManager.load decides):
    an endpoint is trusted when it was given (or allowed); a lane when each of its seed nodes was
    given as a seed of a cluster, or is a node that a given cluster's ``CLUSTER SLOTS`` names
    (asked only when needed)."""
    given = [w.seeds for w in map(_parsed, allowed) if isinstance(w, ClusterEndpoint)]
    given_seeds = [n for seeds in given for n in seeds]
    trusted = set(given_seeds)
    asked = not given_seeds
    out = []
    for s in shards:
        where = _parsed(s)
        if isinstance(where, ClusterEndpoint) and where.tag is not None:
            if not asked and not trusted.issuperset(where.seeds):
                asked = True
                trusted.update(cluster_nodes(given_seeds, password, user))
            if not trusted.issuperset(where.seeds):
                out.append(s)
        elif s not in allowed:
            out.append(s)
    return out


def _parsed(endpoint: str) -> tuple[str, int] | str | ClusterEndpoint | None:
    try:
        return parse_endpoint(endpoint)
    except SpecError:
        return None


def _get_bounded(conn: redis.Redis, key: str, limit: int, what: str) -> bytes | None:
    size = conn.strlen(key)
    if size > limit:
        raise SpecError(f"{what} under {key} is {size} bytes, more than the {limit} a reader accepts")
    return conn.get(key) if size else None


def register_job(endpoints: list[str], job: str, parameters: Mapping[str, np.ndarray], config: TrainingConfig,
                 chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, codec: Codec | str = Codec.RAW,
                 objects: Mapping[str, bytes] | None = None, password: str | None = None,
                 user: str | None = None, pull_encoding: str | None = None) -> Job:
    """Register a new job and publish version 0, as a driver (steps 1-7 of the document).

    ``parameters`` gives the tensors in layout order (dict order) and their initial values;
    ``objects`` are named objects to stage before the config is stored (e.g. data partitions).
    Endpoint 0 becomes the home shard. Raises :class:`JobExists` if any shard has the job's map.
    ``pull_encoding`` (e.g. ``"bf16"``) makes the job keep a pull copy that workers pull.
    Returns the open job.
    """
    keys.check_job_id(job)
    shard_map = ShardMap.create(job, endpoints, specs_of(parameters), chunk_elements, codec,
                                pull_encoding=pull_encoding)
    flat = flatten(parameters, shard_map.layout)
    handle = Job(shard_map, config, password, user, endpoints)
    n = len(endpoints)
    # 1. check
    for i in range(n):
        if handle.shard(i).exists(keys.map_key(job)):
            handle.close()
            raise JobExists(f"job {job} already has a map on {endpoints[i]}")
    # 3. the map: other shards first, the home shard last; lanes are recorded in smlt:lanes
    clusters: dict[tuple, list[ClusterEndpoint]] = {}
    for w in map(parse_endpoint, endpoints):
        if isinstance(w, ClusterEndpoint):
            clusters.setdefault(w.seeds, []).append(w)
    for lanes in clusters.values():
        record_lanes(lanes[0], [w.tag for w in lanes], password, user)
    for i in list(range(1, n)) + [0]:
        pipe = handle.shard(i).pipeline(transaction=True)
        pipe.set(keys.map_key(job), shard_map.to_json())
        pipe.set(keys.epoch_key(job), str(shard_map.epoch))
        pipe.sadd(keys.JOBS, job)
        pipe.execute()
    # 4. stage
    for name, value in (objects or {}).items():
        handle.set_object(name, value)
    # 5. config
    for i in range(n):
        handle.shard(i).set(keys.train_key(job), config.to_json())
    # 6. version 0
    chunks = split_chunks(flat, shard_map.layout)
    for i in range(n):
        pipe = handle.shard(i).pipeline(transaction=False)
        for c in shard_map.chunks_of(i):
            pipe.set(keys.params(job, c), encode(chunks[c], shard_map.codec, step=0, producer=PRODUCER_SERVER))
            if (pull := shard_map.pull_encoding) is not None:
                pipe.set(keys.pull_copy(job, c),
                         encode(chunks[c], pull.codec, step=0, producer=PRODUCER_SERVER, dtype=pull.dtype))
        pipe.execute()
    # 7. publish
    for i in range(n):
        pipe = handle.shard(i).pipeline(transaction=False)
        pipe.xadd(keys.versions(job, i), {"version": "0"}, id="0-1", maxlen=1000, approximate=True)
        pipe.rpush(keys.SERVE_WAKEUP, job)
        pipe.expire(keys.SERVE_WAKEUP, 60)
        pipe.execute()
    return handle
