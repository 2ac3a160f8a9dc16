"""Shards that are lanes of a Redis Cluster (see "Redis Cluster" in docs/wire-format.md).

A lane ``cluster://HOST:PORT[,HOST:PORT...]/TAG`` is the set of keys with the hash tag ``{TAG}``
in front: every key the protocol names is sent as ``{TAG}`` + key, so all of a lane's keys hash
to one slot and one master serves the whole lane. :class:`LaneRedis` is a ``redis.Redis`` for
one lane:

- its connections (:class:`LaneConnection`) put the prefix in front of every key argument, found
  from the command's name with the table of :data:`KEYS` (the commands SMLT sends; any other
  command is refused rather than sent with a key outside the lane), and replies that name keys
  (SCAN, BLPOP, XREAD) lose it again;
- it finds the master of the lane's slot with ``CLUSTER SLOTS`` (the nodes it learned, then the
  seeds) and follows ``MOVED`` (resend there, stay there), ``ASK`` (``ASKING`` and the command on
  that node, once), waits out ``TRYAGAIN``/``CLUSTERDOWN`` (10 ms doubling to 500 ms), and after a
  lost connection finds the master again and resends, except a transaction (it may have run);
  at most 16 redirects and 30 s per command;
- after every command, pipeline or transaction that writes, it sends ``WAIT 1 2000`` on the same
  connection when that master has a replica (``ROLE``), so a failover cannot lose what a caller
  saw done (after a ``WAIT`` that returns 0 it stops waiting on the lane for 10 s).

``WATCH`` works (on one pinned connection) but is not rerouted: a redirect after it fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.crc import key_slot
from redis.exceptions import (AskError, AuthenticationError, ClusterDownError, ConnectionError, MovedError,
                              RedisError, ResponseError, TryAgainError)
from redis.retry import Retry
from redis.backoff import NoBackoff

from .layout import LANE_TAG, ClusterEndpoint, format_node, parse_endpoint

__all__ = ["LaneError", "KEYS", "WRITES", "REGISTRY", "prefix_arguments", "strip_reply", "slot_map", "cluster_nodes",
           "registered_lanes", "record_lanes", "LaneConnection", "LaneRedis", "LanePipeline"]

Node = tuple[str, int]

#: The set of every lane tag a job was registered on (outside every lane, in its own slot).
REGISTRY = "smlt:lanes"


class LaneError(RedisError):
    """A cluster lane that cannot be used: not a cluster, a command outside the key table, a slot
    without a master, a redirect loop, or a slot not served within the retry window."""


# Where each command's keys are (as KeyNamespace.swift): "none", "first", "all", "all-but-last"
# (a timeout last), an int position (the name is 0), "streams" (XREAD: the first half after
# STREAMS), "scan" (the MATCH pattern; one is added when the command has none).
KEYS: dict[str, str | int] = {
    **dict.fromkeys(["PING", "ECHO", "INFO", "MULTI", "EXEC", "DISCARD", "UNWATCH", "AUTH", "HELLO", "CLIENT",
                     "CLUSTER", "WAIT", "ASKING", "TIME", "READONLY", "READWRITE", "COMMAND", "ROLE"], "none"),
    **dict.fromkeys(["GET", "SET", "SETEX", "PSETEX", "SETNX", "STRLEN", "GETRANGE", "SETRANGE", "APPEND", "GETDEL",
                     "GETEX", "INCR", "INCRBY", "DECR", "DECRBY", "SADD", "SREM", "SMEMBERS", "SISMEMBER", "SCARD",
                     "EXPIRE", "PEXPIRE", "TTL", "PTTL", "PERSIST", "TYPE", "LTRIM", "RPUSH", "LPUSH", "LRANGE",
                     "LLEN", "LPOP", "RPOP", "LINDEX", "XADD", "XRANGE", "XREVRANGE", "XLEN", "XTRIM", "XDEL", "HSET",
                     "HSETNX", "HGET", "HMGET", "HGETALL", "HDEL", "HLEN", "HINCRBY", "DUMP", "RESTORE"], "first"),
    **dict.fromkeys(["MGET", "DEL", "UNLINK", "EXISTS", "WATCH", "TOUCH"], "all"),
    **dict.fromkeys(["BLPOP", "BRPOP"], "all-but-last"),
    **dict.fromkeys(["MEMORY", "OBJECT", "XINFO"], 2),
    "XREAD": "streams",
    "SCAN": "scan",
}

#: The commands that change data: a lane waits for its replica after them.
WRITES = frozenset([
    "SET", "SETEX", "PSETEX", "SETNX", "SETRANGE", "APPEND", "GETDEL", "GETEX", "INCR", "INCRBY", "DECR", "DECRBY",
    "SADD", "SREM", "EXPIRE", "PEXPIRE", "PERSIST", "LTRIM", "RPUSH", "LPUSH", "LPOP", "RPOP", "XADD", "XTRIM",
    "XDEL", "HSET", "HSETNX", "HDEL", "HINCRBY", "RESTORE", "DEL", "UNLINK", "EXEC"])

#: How long a command keeps retrying through a failover, a migration or a down cluster (s).
RETRY_WINDOW = 30.0
#: The most redirects one command follows.
MAX_REDIRECTS = 16
#: How long a write waits for its replica (ms), and how long a lane stops waiting after a WAIT
#: that returned 0 (s).
REPLICA_WAIT_MS = 2000
WAIT_PAUSE = 10.0
#: The longest pause between two attempts (s).
MAX_PAUSE = 0.5


def _text(arg: Any) -> str:
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return bytes(arg).decode(errors="replace")
    return str(arg)


def _name(args: Sequence[Any]) -> str:
    return _text(args[0]).upper() if args else ""


def _split_name(args: Sequence[Any]) -> tuple:
    """``args`` with a command name like ``"CLUSTER SLOTS"`` split into its words (as redis-py's
    packers do), so that positions count from the real name."""
    if args and isinstance(args[0], (str, bytes)) and (" " in args[0] if isinstance(args[0], str) else b" " in args[0]):
        return tuple(args[0].split()) + tuple(args[1:])
    return tuple(args)


def _prefixed(prefix: str, key: Any) -> Any:
    if isinstance(key, (bytes, bytearray, memoryview)):
        return prefix.encode() + bytes(key)
    return prefix + str(key)


def prefix_arguments(args: Sequence[Any], prefix: str) -> tuple:
    """``args`` (a command, name first) with ``prefix`` in front of every key argument; raises
    :class:`LaneError` for a command outside :data:`KEYS`."""
    args = _split_name(args)
    if not args:
        return args
    name = _name(args)
    where = KEYS.get(name)
    if where is None:
        raise LaneError(f"{name} is not supported on a cluster lane (its keys could not be given the lane's hash tag)")
    out = list(args)
    if where == "first":
        positions: Iterable[int] = range(1, min(2, len(out)))
    elif where == "all":
        positions = range(1, len(out))
    elif where == "all-but-last":
        positions = range(1, len(out) - 1)
    elif isinstance(where, int):
        positions = [where] if where < len(out) else []
    elif where == "streams":
        s = next((i for i, a in enumerate(out) if _text(a).upper() == "STREAMS"), None)
        positions = [] if s is None else range(s + 1, s + 1 + (len(out) - s - 1) // 2)
    elif where == "scan":
        m = next((i for i, a in enumerate(out) if _text(a).upper() == "MATCH"), None)
        if m is None or m + 1 >= len(out):
            out += ["MATCH", prefix + "*"]
            positions = []
        else:
            positions = [m + 1]
    else:
        positions = []
    for i in positions:
        out[i] = _prefixed(prefix, out[i])
    return tuple(out)


def _strip_key(key: Any, prefix: str) -> Any:
    if isinstance(key, bytes) and key.startswith(prefix.encode()):
        return key[len(prefix):]
    if isinstance(key, str) and key.startswith(prefix):
        return key[len(prefix):]
    return key


def strip_reply(name: str, reply: Any, prefix: str) -> Any:
    """A parsed reply to ``name`` (upper case) with ``prefix`` taken off the keys it names (SCAN,
    BLPOP/BRPOP, XREAD); other replies as they are."""
    if name == "SCAN" and isinstance(reply, (list, tuple)) and len(reply) == 2 and isinstance(reply[1], list):
        return type(reply)([reply[0], [_strip_key(k, prefix) for k in reply[1]]])
    if name in ("BLPOP", "BRPOP") and isinstance(reply, (list, tuple)) and reply:
        return type(reply)([_strip_key(reply[0], prefix), *reply[1:]])
    if name == "XREAD":
        if isinstance(reply, dict):  # RESP3
            return {_strip_key(k, prefix): v for k, v in reply.items()}
        if isinstance(reply, list):
            return [[_strip_key(s[0], prefix), *s[1:]] if isinstance(s, (list, tuple)) and s else s for s in reply]
    return reply


# The cluster's nodes ---------------------------------------------------------------------------

def _plain(node: Node, password: str | None, user: str | None, timeout: float = 5.0) -> redis.Redis:
    return redis.Redis(host=node[0], port=node[1], password=password, username=user, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


def slot_map(node: Node, password: str | None = None, user: str | None = None) -> list[tuple[int, int, Node, list[Node]]]:
    """``CLUSTER SLOTS`` of ``node``: ``(first, last, master, replicas)`` per range, by first slot.

    Raises :class:`LaneError` when the node is not in cluster mode, and redis-py's
    ``ConnectionError``/``AuthenticationError`` when it cannot be reached or refuses the credentials.
    """
    c = _plain(node, password, user)
    try:
        reply = c.execute_command("CLUSTER", "SLOTS")
    except ResponseError as e:
        if "cluster support disabled" in str(e):
            raise LaneError(f"{format_node(node)} is not in cluster mode (cluster_enabled:0); "
                            "give it without cluster://") from None
        raise
    finally:
        c.close()

    def endpoint(entry: Any) -> Node:
        if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[1], int):
            raise LaneError(f"CLUSTER SLOTS of {format_node(node)}: a node entry is not [host, port, ...]: {entry!r}")
        host = _text(entry[0])
        return (node[0] if host in ("", "?") else host), entry[1]

    ranges = []
    for e in reply if isinstance(reply, list) else []:
        if not isinstance(e, list) or len(e) < 3:
            raise LaneError(f"CLUSTER SLOTS of {format_node(node)}: a range entry is not [start, end, master, ...]")
        ranges.append((int(e[0]), int(e[1]), endpoint(e[2]), [endpoint(r) for r in e[3:]]))
    return sorted(ranges)


def _all_nodes(ranges: list[tuple[int, int, Node, list[Node]]]) -> list[Node]:
    """Every master and replica of a slot map, masters first."""
    out: list[Node] = []
    for part in ([r[2] for r in ranges], [n for r in ranges for n in r[3]]):
        out += [n for n in part if n not in out]
    return out


def _master_of(ranges: list[tuple[int, int, Node, list[Node]]], slot: int) -> Node | None:
    return next((m for lo, hi, m, _ in ranges if lo <= slot <= hi), None)


def _first_map(seeds: Iterable[Node], password: str | None, user: str | None, what: str):
    last: Exception = ConnectionError(f"{what}: no seed node answered")
    for node in seeds:
        try:
            return slot_map(node, password, user)
        except AuthenticationError as e:
            raise AuthenticationError(f"cluster node {format_node(node)} refused the credentials: {e} "
                                      "(every node of the cluster must accept them)") from None
        except (ConnectionError, redis.TimeoutError) as e:
            last = e
    raise last


def cluster_nodes(seeds: Iterable[Node], password: str | None = None, user: str | None = None) -> list[Node]:
    """Every node of the cluster at ``seeds`` as its slot map names them (empty when none answers)."""
    try:
        return _all_nodes(_first_map(list(seeds), password, user, "cluster"))
    except RedisError:
        return []


def _registry(cluster: ClusterEndpoint, password: str | None, user: str | None) -> redis.Redis:
    """A plain connection to the master serving :data:`REGISTRY`'s slot."""
    ranges = _first_map(cluster.seeds, password, user, str(cluster))
    master = _master_of(ranges, key_slot(REGISTRY.encode()))
    if master is None:
        raise LaneError(f"the cluster at {cluster} serves no master for the slot of {REGISTRY}")
    return _plain(master, password, user, 30.0)


def registered_lanes(cluster: ClusterEndpoint, password: str | None = None, user: str | None = None) -> list[str]:
    """The lanes recorded on ``cluster`` (the valid tags in :data:`REGISTRY`), sorted by tag, named
    with ``cluster``'s seeds."""
    c = _registry(cluster, password, user)
    try:
        tags = sorted(_text(t) for t in c.smembers(REGISTRY))
    finally:
        c.close()
    return [str(cluster.lane(t)) for t in tags if LANE_TAG.fullmatch(t)]


def record_lanes(cluster: ClusterEndpoint, tags: Iterable[str], password: str | None = None,
                 user: str | None = None) -> None:
    """``SADD smlt:lanes TAG...``: lets ``smlt serve`` given the whole cluster serve these lanes."""
    tags = list(tags)
    if not tags:
        return
    c = _registry(cluster, password, user)
    try:
        c.sadd(REGISTRY, *tags)
    finally:
        c.close()


# Routing -----------------------------------------------------------------------------------------

_known_lock = threading.Lock()
#: The nodes each cluster (by seed list) was last seen with: a new lane connection asks them
#: before its seeds, so a process whose seed node died still finds the cluster.
_known: dict[tuple[Node, ...], list[Node]] = {}


class Lane:
    """The routing state of one lane: its slot, the nodes learned, and the master serving it."""

    def __init__(self, endpoint: ClusterEndpoint, password: str | None, user: str | None):
        if endpoint.tag is None:
            raise LaneError(f"{endpoint} names a whole cluster; a shard is a lane cluster://SEEDS/TAG")
        self.endpoint = endpoint
        self.tag = endpoint.tag
        self.prefix = f"{{{endpoint.tag}}}"
        self.slot = key_slot(self.prefix.encode())
        self.password, self.user = password, user
        with _known_lock:
            self.known = list(_known.get(endpoint.seeds, []))
        self.master: Node | None = None
        #: No WAIT before this time.monotonic() (the last one returned 0).
        self.wait_paused_until = 0.0

    def __str__(self) -> str:
        return str(self.endpoint)

    def resolve(self) -> None:
        """Find the master serving the lane's slot: ``CLUSTER SLOTS`` from the current master, the
        nodes learned, then the seeds."""
        last: Exception = ConnectionError(f"{self}: no seed node answered")
        tried: set[Node] = set()
        for node in [self.master, *self.known, *self.endpoint.seeds]:
            if node is None or node in tried:
                continue
            tried.add(node)
            try:
                ranges = _first_map([node], self.password, self.user, str(self))
            except (ConnectionError, redis.TimeoutError) as e:
                if isinstance(e, AuthenticationError):
                    raise
                last = e
                continue
            self.known = _all_nodes(ranges)
            with _known_lock:
                if len(_known) > 64:
                    _known.clear()
                _known[self.endpoint.seeds] = self.known
            master = _master_of(ranges, self.slot)
            if master is None:
                last = LaneError(f"no master serves slot {self.slot} of lane '{self.tag}' "
                                 "(the cluster has uncovered slots)")
                continue
            self.master = master
            return
        raise last

    def wait_for_replica(self, conn: "LaneConnection", names: Iterable[str]) -> None:
        """``WAIT 1 2000`` on ``conn`` after commands ``names`` when one of them writes and
        ``conn``'s node has a replica."""
        if conn.replicas == 0 or time.monotonic() < self.wait_paused_until or not any(n in WRITES for n in names):
            return
        try:
            conn.send_command("WAIT", 1, REPLICA_WAIT_MS)
            acked = conn.read_response()
        except (ConnectionError, redis.TimeoutError) as e:
            # The writes ran; resending them is not this layer's call.
            raise LaneError(f"{self}: the connection to {format_node(conn.node)} broke while waiting for "
                            f"its replica after a write: {e}") from e
        if acked == 0:
            self.wait_paused_until = time.monotonic() + WAIT_PAUSE


class _PrefixingPacker:
    """Wraps a redis-py command packer: every command packed (``send_command``, ``pack_command``,
    ``pack_commands`` all go through it) gets the lane's prefix on its keys."""

    def __init__(self, inner: Any, prefix: str):
        self.inner, self.prefix = inner, prefix

    def pack(self, *args: Any) -> list:
        return self.inner.pack(*prefix_arguments(args, self.prefix))


class LaneConnection(redis.Connection):
    """A connection to a node of a lane: keys prefixed; connects to the lane's current master
    (or to ``node``, for an ``ASK``); learns the node's replicas with ``ROLE``."""

    def __init__(self, *, lane: Lane, node: Node | None = None, **kwargs: Any):
        self.lane, self._fixed = lane, node
        self.replicas = 0
        super().__init__(**kwargs)
        self._command_packer = _PrefixingPacker(self._command_packer, lane.prefix)

    @property
    def node(self) -> Node:
        return self.host, self.port

    def _connect(self):
        if self._fixed is not None:
            self.host, self.port = self._fixed
        else:
            if self.lane.master is None:
                self.lane.resolve()
            self.host, self.port = self.lane.master
        return super()._connect()

    def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            super().on_connect_check_health(check_health)
        except AuthenticationError as e:
            raise AuthenticationError(f"cluster node {format_node(self.node)} refused the credentials: {e} "
                                      "(every node of the cluster must accept them)") from None
        try:
            self.send_command("ROLE", check_health=False)
            role = self.read_response()
        except ResponseError:
            role = None
        if isinstance(role, list) and len(role) >= 3 and _text(role[0]) == "master" and isinstance(role[2], list):
            self.replicas = len(role[2])
        else:
            self.replicas = 0


Attempt = Callable[[LaneConnection, list[int], bool], list[tuple[int, Any]]]


def _redirect(reply: Any) -> bool:
    return isinstance(reply, (AskError, TryAgainError, ClusterDownError))


class LaneRedis(redis.Redis):
    """A ``redis.Redis`` for one cluster lane (see the module's documentation)."""

    def __init__(self, endpoint: str | ClusterEndpoint, password: str | None = None, user: str | None = None,
                 socket_timeout: float | None = 30.0):
        where = parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
        if not isinstance(where, ClusterEndpoint):
            raise LaneError(f"{endpoint} is not a cluster lane")
        self.lane = Lane(where, password, user)
        connect_timeout = 5.0 if socket_timeout is None else min(socket_timeout, 5.0)
        pool = redis.ConnectionPool(connection_class=LaneConnection, lane=self.lane, host=where.seeds[0][0],
                                    port=where.seeds[0][1], password=password, username=user,
                                    socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                                    retry=Retry(NoBackoff(), 0))
        super().__init__(connection_pool=pool)
        self.auto_close_connection_pool = True  # the pool is this client's own: close() closes it

    def __repr__(self) -> str:
        return f"LaneRedis({self.lane})"

    def parse_response(self, connection, command_name, **options):
        reply = super().parse_response(connection, command_name, **options)
        return strip_reply(_text(command_name).upper(), reply, self.lane.prefix)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> "LanePipeline":
        return LanePipeline(self, transaction)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]

        def attempt(conn: LaneConnection, _: list[int], asking: bool) -> list[tuple[int, Any]]:
            try:
                if asking:
                    conn.send_command("ASKING")
                    conn.read_response()
                conn.send_command(*args)
                reply = self.parse_response(conn, name, **options)
            except ResponseError as e:
                return [(0, e)]
            self.lane.wait_for_replica(conn, [_name(_split_name(args))])
            return [(0, reply)]

        reply = self.route(attempt, 1, transaction=False)[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _move(self, node: Node) -> None:
        if node != self.lane.master:
            self.lane.master = node
            self.connection_pool.disconnect()

    def route(self, attempt: Attempt, count: int, transaction: bool) -> list[Any]:
        """Runs ``count`` commands with ``attempt(connection, indices, asking)`` (which returns each
        index's reply, an error reply as its exception) until none is a redirect; returns the
        replies by index. A transaction is ``count`` 1 and is sent whole again after a redirect."""
        lane = self.lane
        deadline = time.monotonic() + RETRY_WINDOW
        pending, results = list(range(count)), [None] * count
        pause, redirects = 0.01, 0
        last_error: Exception | None = None

        def wait(why: str) -> None:
            nonlocal pause
            if time.monotonic() + pause >= deadline:
                if last_error is not None:
                    raise last_error
                raise LaneError(f"{lane}: slot {lane.slot} was not served within {RETRY_WINDOW:g} s: {why}")
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)

        while True:
            try:
                conn = self.connection_pool.get_connection()
            except ConnectionError as e:  # get_connection connects
                conn, replies, lost = None, [], e
            else:
                try:
                    replies, lost = attempt(conn, pending, False), None
                except AuthenticationError:
                    raise
                except ConnectionError as e:
                    conn.disconnect()
                    replies, lost = [], e
                finally:
                    self.connection_pool.release(conn)
            if isinstance(lost, AuthenticationError):
                raise lost
            if lost is not None:
                last_error = lost
                if transaction:
                    try:
                        self._resolve()
                    except RedisError:
                        pass
                    raise lost
                wait(str(lost))
                try:
                    self._resolve()
                except AuthenticationError:
                    raise
                except (ConnectionError, redis.TimeoutError, LaneError) as e:
                    last_error = e
                continue
            redirected = []
            for i, reply in replies:
                if _redirect(reply):
                    redirected.append((i, reply))
                else:
                    results[i] = reply
            if not redirected:
                return results
            redirects += 1
            if redirects > MAX_REDIRECTS:
                raise LaneError(f"{lane}: slot {lane.slot}: more than {MAX_REDIRECTS} redirects "
                                "(a redirect loop between nodes?)")
            if transaction:
                reply = redirected[0][1]
                if isinstance(reply, MovedError):
                    self._move(reply.node_addr)
                else:
                    wait("the slot is migrating" if isinstance(reply, AskError) else str(reply))
                continue
            again, following, asks = False, [], {}
            for i, reply in redirected:
                if isinstance(reply, MovedError):
                    self._move(reply.node_addr)
                    following.append(i)
                elif isinstance(reply, AskError):
                    asks.setdefault(reply.node_addr, []).append(i)
                else:
                    again = True
                    following.append(i)
            for node, indices in asks.items():
                c = LaneConnection(lane=lane, node=node, **{k: v for k, v in self.connection_pool.connection_kwargs.items()
                                                           if k != "lane"})
                try:
                    for i, reply in attempt(c, indices, True):
                        if _redirect(reply):
                            again = True
                            following.append(i)
                        else:
                            results[i] = reply
                except AuthenticationError:
                    raise
                except ConnectionError as e:
                    last_error, again = e, True
                    following += indices
                finally:
                    c.disconnect()
            if again:
                wait("TRYAGAIN or CLUSTERDOWN")
            pending = sorted(following)
            if not pending:
                return results

    def _resolve(self) -> None:
        before = self.lane.master
        self.lane.resolve()
        if self.lane.master != before:
            self.connection_pool.disconnect()


class LanePipeline(Pipeline):
    """A pipeline (or ``MULTI``/``EXEC`` transaction) on a lane, routed as :class:`LaneRedis`
    routes single commands: a redirected command of a pipeline is sent again alone; a transaction
    is sent whole again."""

    def __init__(self, client: LaneRedis, transaction: bool):
        super().__init__(client.connection_pool, client.response_callbacks, transaction, None)
        self.client = client

    def parse_response(self, connection, command_name, **options):
        reply = super().parse_response(connection, command_name, **options)
        return strip_reply(_text(command_name).upper(), reply, self.client.lane.prefix)

    def _names(self, commands: Sequence[tuple]) -> list[str]:
        return [_name(_split_name(args)) for args, _ in commands]

    def _execute_transaction(self, connection, commands, raise_on_error):
        result = super()._execute_transaction(connection, commands, raise_on_error)
        self.client.lane.wait_for_replica(connection, ["EXEC"])
        return result

    def _execute_pipeline(self, connection, commands, raise_on_error):
        result = super()._execute_pipeline(connection, commands, raise_on_error)
        self.client.lane.wait_for_replica(connection, self._names(commands))
        return result

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.watching:  # WATCH pinned a connection: no rerouting (a redirect fails)
            return super().execute(raise_on_error)
        stack = self.command_stack
        if not stack:
            return []
        try:
            if self.transaction or self.explicit_transaction:
                def attempt(conn: LaneConnection, _: list[int], asking: bool) -> list[tuple[int, Any]]:
                    try:
                        return [(0, self._execute_transaction(conn, stack, False))]
                    except ResponseError as e:  # a redirect of a queued command, or EXECABORT
                        return [(0, e)]

                replies = self.client.route(attempt, 1, transaction=True)[0]
                if isinstance(replies, Exception):
                    raise replies
            else:
                def attempt(conn: LaneConnection, indices: list[int], asking: bool) -> list[tuple[int, Any]]:
                    if not asking:
                        return list(zip(indices, self._execute_pipeline(conn, [stack[i] for i in indices], False)))
                    out = []
                    for i in indices:
                        args, options = stack[i]
                        try:
                            conn.send_command("ASKING")
                            conn.read_response()
                            conn.send_command(*args)
                            out.append((i, self.parse_response(conn, args[0], **options)))
                        except ResponseError as e:
                            out.append((i, e))
                    self.client.lane.wait_for_replica(conn, self._names([stack[i] for i in indices]))
                    return out

                replies = self.client.route(attempt, len(stack), transaction=False)
            if raise_on_error:
                self.raise_first_error(stack, replies)
            return replies
        finally:
            self.reset()
