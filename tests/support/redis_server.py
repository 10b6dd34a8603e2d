"""Real redis-server processes on free loopback ports, and reading and writing
streams as the service does. Everything started here is stopped by pid."""

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from common.events import Entry, StreamEvent, to_fields
from kube2redis.localcluster.processes import free_port
from tests.support.waits import wait_until

REDIS_SERVER = shutil.which("redis-server")


def read_stream(r: "redis.Redis", key: str | bytes) -> list[Entry]:
    """Every entry of a stream, as a client without decode_responses returns them
    (redis-py's annotations leave the reply's type open)."""
    return cast(list[Entry], r.xrange(key))


def append_event(r: "redis.Redis", stream: str, event: StreamEvent) -> bytes:
    """XADD one event as the watcher writes it; its entry id."""
    # redis-py's parameter type is a dict of its own unions, which dict's invariance
    # keeps a dict[str, bytes | str | int] from matching.
    fields: dict[Any, Any] = dict(to_fields(event))
    return cast(bytes, r.xadd(stream, fields))


@dataclass
class RedisServer:
    """A redis-server on a free loopback port, with AOF so a kill -9 loses nothing
    that was acknowledged (appendfsync always); ``extra_args`` come last and win."""

    directory: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    password: str | None = None
    # Every client handed out, closed by stop(): none is left to the garbage collector.
    clients: list["redis.Redis"] = field(default_factory=list)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> "RedisServer":
        assert REDIS_SERVER, "redis-server is not installed"
        self.port = self.port or free_port()
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra_args,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, timeout_s, f"redis-server on port {self.port}", 0.05)
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False
        except redis.ResponseError as exc:  # LOADING the AOF
            if "LOADING" not in str(exc):
                raise
            return False

    def client(self, **kwargs: Any) -> "redis.Redis":
        client = redis.Redis.from_url(self.url, **{"socket_timeout": 5, **kwargs})
        self.clients.append(client)
        return client

    def kill(self) -> None:
        """kill -9, for real."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart_empty(self) -> None:
        """kill -9, lose every byte it held (as a Redis without persistence does),
        and start again on the same port."""
        self.kill()
        self._wipe()
        self.start()

    def snapshot(self, to: Path) -> None:
        """An RDB snapshot of what it holds now, copied to ``to``."""
        self.client().save()
        shutil.copyfile(self.directory / "dump.rdb", to)

    def restore(self, snapshot: Path) -> None:
        """kill -9 and start again from an older snapshot only (what a failover to
        a replica that missed the last writes, or a restored backup, looks like)."""
        self.kill()
        self._wipe()
        shutil.copyfile(snapshot, self.directory / "dump.rdb")
        # Load the RDB (with AOF on, Redis would start from the missing AOF instead),
        # then turn AOF back on for the rest of the test.
        self.extra_args = [*self.extra_args, "--appendonly", "no"]
        try:
            self.start()
        finally:
            self.extra_args = self.extra_args[:-2]
        self.client().config_set("appendonly", "yes")

    def _wipe(self) -> None:
        for path in self.directory.iterdir():
            if path.name == "redis.log":
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
