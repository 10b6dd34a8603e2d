"""classify() on error replies captured from a real redis-server, each provoked the
way it happens in production: memory, role, persistence, ACLs, a long script,
loading, and errors that are an entry's own fault."""

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.rediserrors import ErrorClass, classify, describe, error_code
from common.resp import Batch, call
from kube2redis.localcluster.processes import free_port
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until

# Real redis-servers, some started here with their own settings.
pytestmark = pytest.mark.redis

# A script that reads, then writes: without flags Redis checks OOM/READONLY/MISCONF/ACL
# at the write; with "#!lua" (as apply.lua and relist.lua) it refuses the call up front.
READ_THEN_WRITE = b"redis.call('GET', KEYS[1]); return redis.call('HSET', KEYS[1], 'f', 'v')"
SCRIPTS = (READ_THEN_WRITE, b"#!lua\n" + READ_THEN_WRITE)


def _raised(action: Callable[[], object]) -> redis.RedisError:
    with pytest.raises(redis.RedisError) as caught:
        action()
    return caught.value


def _script_replies(r: "redis.Redis") -> list[redis.RedisError]:
    """The error replies of scripts whose write is refused, as the projector gets them
    (replies in a hand-packed batch, not raised exceptions)."""
    batch = Batch()
    for script in SCRIPTS:
        batch.add(b"EVAL", script, 1, "h")
    replies = batch.send(r)
    assert all(isinstance(reply, redis.RedisError) for reply in replies), replies
    return [reply for reply in replies if isinstance(reply, redis.RedisError)]


def _refusal(exc: BaseException, code: str) -> None:
    assert classify(exc) is ErrorClass.REFUSAL, (exc, error_code(exc))
    assert error_code(exc) == code
    assert describe(exc).startswith(code), describe(exc)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator["redis.Redis"]:
    c = redis_server.client()
    yield c
    c.close()


def test_oom_outside_and_inside_a_script(client: "redis.Redis") -> None:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # any used memory is over it
    try:
        _refusal(_raised(lambda: client.set("k", "v")), "OOM")
        for reply in _script_replies(client):
            _refusal(reply, "OOM")
        stream_create = _raised(lambda: client.xgroup_create("s", "g", "0", mkstream=True))
        _refusal(stream_create, "OOM")
    finally:
        client.config_set("maxmemory", 0)


def test_readonly_replica(client: "redis.Redis") -> None:
    call(client, b"REPLICAOF", b"127.0.0.1", free_port())  # a master that is not there
    try:
        _refusal(_raised(lambda: client.set("k", "v")), "READONLY")
        for reply in _script_replies(client):
            _refusal(reply, "READONLY")
    finally:
        call(client, b"REPLICAOF", b"NO", b"ONE")


def test_misconf_after_a_failed_snapshot(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    # Save points make a failed BGSAVE stop writes; a deleted working directory fails it.
    server = RedisServer(
        tmp_path / "redis", ["--save", "3600 1", "--appendonly", "no", "--dir", str(gone)]
    ).start()
    client = server.client()
    try:
        gone.rmdir()
        client.bgsave()
        wait_until(
            lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err",
            10,
            "the snapshot to fail",
        )
        _refusal(_raised(lambda: client.set("k", "v")), "MISCONF")
        for reply in _script_replies(client):
            _refusal(reply, "MISCONF")
        pipe = client.pipeline(transaction=False)
        pipe.get("k")
        pipe.set("k", "v")
        # redis-py rewrites the message ("Command # 2 (...) of pipeline caused error: ...").
        _refusal(_raised(pipe.execute), "MISCONF")
    finally:
        client.config_set("save", "")  # else shutdown tries to save, fails, and stays up
        client.close()
        server.stop()


def test_noperm_outside_and_inside_a_script(
    redis_server: RedisServer, client: "redis.Redis"
) -> None:
    client.acl_setuser(
        "limited", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-hset"]
    )
    limited = redis_server.client(username="limited", password="pw")
    try:
        _refusal(_raised(lambda: limited.hset("h", "f", "v")), "NOPERM")
        # Inside a script Redis says ERR ("The user executing the script can't ..."):
        # a NOPERM all the same, the server's condition, never the entry's.
        for denied in _script_replies(limited):
            assert str(denied).startswith("The user executing the script can't")
            assert classify(denied) is ErrorClass.REFUSAL
            assert error_code(denied) == "NOPERM"
    finally:
        limited.close()


def test_busy_while_a_script_runs_long(redis_server: RedisServer, client: "redis.Redis") -> None:
    client.config_set("busy-reply-threshold", 20)
    spinner = redis_server.client()
    done: list[object] = []

    def spin() -> None:
        try:
            done.append(spinner.eval("local i = 0 while true do i = i + 1 end", 0))
        except redis.ResponseError as exc:
            done.append(exc)

    thread = threading.Thread(target=spin)
    thread.start()
    busy: list[redis.RedisError] = []

    def refused() -> bool:
        try:
            client.set("k", "v")
        except redis.ResponseError as exc:
            busy.append(exc)
        return bool(busy)

    try:
        wait_until(refused, 10, "BUSY", interval_s=0.01)
    finally:
        wait_until(lambda: _kill_script(client), 10, "SCRIPT KILL")
        thread.join(10)
    _refusal(busy[0], "BUSY")


def _kill_script(client: "redis.Redis") -> bool:
    try:
        client.script_kill()
    except redis.ResponseError as exc:
        return error_code(exc) == "NOTBUSY"  # not started yet or already killed
    return True


def test_loading_is_a_refusal_although_redis_py_raises_a_connection_error(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", ["--enable-debug-command", "yes"]).start()
    admin = server.client()
    # No client retries: the first LOADING reply is what we look at.
    client = redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
    try:
        pipe = admin.pipeline(transaction=False)
        for i in range(2000):
            pipe.set(f"k{i}", "v")
        pipe.execute()
        # A slow load that answers other clients meanwhile (as a restart does).
        admin.config_set("key-load-delay", 1000)
        admin.config_set("loading-process-events-interval-bytes", 1024)
        reload = threading.Thread(target=lambda: call(admin, b"DEBUG", b"RELOAD"))
        reload.start()
        loading: list[redis.RedisError] = []

        def refused() -> bool:
            try:
                client.set("x", "1")
            except redis.RedisError as exc:
                loading.append(exc)
            return bool(loading)

        wait_until(refused, 10, "LOADING", interval_s=0.005)
        reload.join(30)
        assert isinstance(loading[0], redis.ConnectionError)  # redis-py's BusyLoadingError
        _refusal(loading[0], "LOADING")
    finally:
        client.close()
        admin.close()
        server.stop()


def test_the_entrys_own_faults(client: "redis.Redis") -> None:
    client.set("str", "v")
    wrongtype = _raised(lambda: client.hset("str", "f", "v"))
    assert classify(wrongtype) is ErrorClass.ENTRY
    assert error_code(wrongtype) == "WRONGTYPE"
    batch = Batch()
    batch.add(b"EVAL", b"return redis.error_reply('rv is not a resourceVersion')", 0)
    batch.add(b"EVAL", b"return redis.call('HSET', KEYS[1], 'f', 'v')", 1, "str")
    batch.add(b"EVAL", b"return nil + 1", 0)
    for reply in batch.send(client):
        assert isinstance(reply, redis.RedisError), reply
        assert classify(reply) is ErrorClass.ENTRY, reply
    pipe = client.pipeline(transaction=False)
    pipe.hset("str", "f", "v")
    annotated = _raised(pipe.execute)
    assert error_code(annotated) == "WRONGTYPE"
    assert classify(annotated) is ErrorClass.ENTRY


def test_noscript_and_unreachable(client: "redis.Redis") -> None:
    missing = _raised(lambda: client.evalsha("0" * 40, 0))
    assert classify(missing) is ErrorClass.NOSCRIPT
    down = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0), socket_connect_timeout=2)
    assert classify(_raised(down.ping)) is ErrorClass.UNREACHABLE
