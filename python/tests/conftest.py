"""Fixtures that start throw-away redis-server and `smlt serve` processes and always stop them.

Every process gets a finalizer (it is stopped on success and on failure). When SMLT_TEST_PIDDIR
is set (make test sets it), each also leaves a pid file there, so a crashed run leaves nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pidfile(kind: str) -> Path | None:
    d = os.environ.get("SMLT_TEST_PIDDIR")
    if not d:
        return None
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d) / f"py-{kind}-{uuid.uuid4().hex}.pid"


def _stop(proc: subprocess.Popen, pidfile: Path | None) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if pidfile is not None:
        pidfile.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def smlt_bin() -> str:
    """The smlt executable: $SMLT_BIN (must exist), else .build/debug/smlt (skip if not built)."""
    given = os.environ.get("SMLT_BIN")
    if given:
        assert os.access(given, os.X_OK), f"SMLT_BIN={given} is not an executable"
        return given
    default = REPO / ".build" / "debug" / "smlt"
    if not default.exists():
        pytest.skip("smlt is not built (swift build --product smlt) and SMLT_BIN is not set")
    return str(default)


class Processes:
    """Starts processes for one test and stops all of them at its end."""

    def __init__(self):
        self._procs: list[tuple[subprocess.Popen, Path | None]] = []

    def start(self, args: list[str], kind: str, **kw) -> subprocess.Popen:
        pidfile = _pidfile(kind)
        proc = subprocess.Popen(args, **kw)
        self._procs.append((proc, pidfile))
        if pidfile is not None:
            pidfile.write_text(str(proc.pid))
        return proc

    def redis(self, password: str | None = None) -> str:
        """A redis-server on a free loopback port (with ``requirepass`` when given); returns its
        endpoint once it answers PING."""
        for _ in range(5):
            port = _free_port()
            auth = ["--requirepass", password] if password else []
            proc = self.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", *auth],
                              "redis", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            conn = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, password=password)
            for _ in range(200):
                if proc.poll() is not None:
                    break
                try:
                    conn.ping()
                    conn.close()
                    return f"127.0.0.1:{port}"
                except redis.ConnectionError:
                    time.sleep(0.02)
        raise RuntimeError("could not start redis-server")

    def stop_all(self) -> None:
        for proc, pidfile in reversed(self._procs):
            _stop(proc, pidfile)
        self._procs.clear()


@pytest.fixture
def procs():
    p = Processes()
    yield p
    p.stop_all()


@pytest.fixture
def cluster(procs, smlt_bin):
    """Two redis shards with `smlt serve` running for them: returns the endpoints."""
    endpoints = [procs.redis(), procs.redis()]
    procs.start([smlt_bin, "serve", "--redis", ",".join(endpoints)], "serve",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return endpoints
