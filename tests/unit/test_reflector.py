"""The reflector's failure table, branch by branch, against an in-memory API
server and writer (tests/fakes.py): the branches that are hard to reach for real."""

import logging
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from common import events as ev
from common.kube import KubeUnreachableError, status_error
from tests.fakes import JOBS, FakeKube, FakeWriter, job, watch_line
from tests.support.waits import wait_until
from watcher import reflector
from watcher.backoff import Backoff
from watcher.metrics import WatcherMetrics
from watcher.reflector import Reflector

SCOPE = "jobs.batch.volcano.sh/ns"


class CountingBackoff(Backoff):
    """Short delays, counted: a test asserts that a branch backed off, not how long."""

    def __init__(self) -> None:
        super().__init__(initial=0.01, maximum=0.01, jitter=0.0)
        self.delays = 0

    def next_delay(self) -> float:
        self.delays += 1
        return super().next_delay()


class Running:
    def __init__(self, kube: FakeKube, start_rv: str | None = None, **options: Any) -> None:
        self.kube, self.writer, self.metrics = kube, FakeWriter(), WatcherMetrics()
        self.reflector = Reflector(
            cast(Any, kube),
            JOBS,
            "ns",
            cast(Any, self.writer),
            self.metrics,
            start_rv=start_rv,
            **options,
        )
        self.backoff = CountingBackoff()
        self.reflector.backoff = self.backoff
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.reflector.run, args=(self.stop,))
        self.thread.start()

    def relists(self, reason: str) -> float:
        labels = {"resource": "jobs.batch.volcano.sh", "reason": reason}
        return (
            self.metrics.registry.get_sample_value("kube2redis_watcher_relists_total", labels) or 0
        )

    def ends(self) -> list[ev.StreamEvent]:
        with self.writer.lock:
            return [i.event for i in self.writer.items if i.event and i.event.type == ev.RELIST_END]

    def halt(self) -> None:
        self.stop.set()
        self.reflector.request_relist("stop")  # cuts a blocked watch
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for run in started:
        run.halt()


def test_an_expired_continue_token_starts_the_list_over_and_misses_nothing(
    running: list[Running],
) -> None:
    kube = FakeKube(objects={n: 10 + i for i, n in enumerate("abcde")}, expire_continue_once=True)
    run = Running(kube)
    running.append(run)
    wait_until(run.ends, 10, "the relist's end")
    (end,) = run.ends()
    assert sorted(ev.decode_members(end.members)) == ["ns:a", "ns:b", "ns:c", "ns:d", "ns:e"]
    assert run.relists("initial") == 1


def test_a_very_short_watch_backs_off_instead_of_spinning(running: list[Running]) -> None:
    kube = FakeKube()  # every watch ends at once with nothing in it
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: kube.watch_calls >= 5, 10, "several watches")
    run.halt()
    running.clear()
    assert run.backoff.delays >= kube.watch_calls - 1


def test_an_unexpected_exception_is_logged_backs_off_and_relists(
    running: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    failures = [RuntimeError("a bug in the loop")]

    def fail_once() -> None:
        if failures:
            raise failures.pop()

    kube = FakeKube(objects={"a": 10}, fail_watch=fail_once)
    with caplog.at_level(logging.ERROR):
        run = Running(kube)
        running.append(run)
        wait_until(lambda: run.relists("crashed") == 1, 10, "a relist after the crash")
        wait_until(lambda: len(run.ends()) == 2, 10, "the second relist's end")
    assert any(r.exc_info and "a bug in the loop" in str(r.exc_info[1]) for r in caplog.records)
    crashes = run.metrics.registry.get_sample_value(
        "kube2redis_watcher_reflector_crashes_total", {"resource": "jobs.batch.volcano.sh"}
    )
    assert crashes == 1
    assert run.backoff.delays >= 1


def test_a_relist_request_cuts_a_watch_blocked_on_a_quiet_stream(running: list[Running]) -> None:
    kube = FakeKube(objects={"a": 10}, watches=[([], "block"), ([], "block")])
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: kube.watch_calls == 1 and run.reflector.api_ok, 10, "a watch open")

    run.reflector.request_relist("resync")

    wait_until(lambda: kube.watch_calls == 2, 10, "the relist, then a new watch")
    assert run.relists("resync") == 1
    assert len(run.ends()) == 1
    assert run.backoff.delays == 0  # cutting our own watch is not a failure


def test_events_move_the_rv_and_a_410_relists(running: list[Running]) -> None:
    kube = FakeKube(
        objects={"a": 120},
        list_rv=120,
        watches=[([watch_line("MODIFIED", job("a", 110))], status_error(410, "too old"))],
    )
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: run.relists("gone") == 1, 10, "a relist after 410")
    wait_until(run.ends, 10, "its end")
    assert run.writer.types()[:2] == [ev.MODIFIED, ev.RELIST_BEGIN]


def test_a_checkpoint_ahead_of_the_server_stops_the_scope_for_a_wipe(
    running: list[Running],
) -> None:
    rewound: list[str] = []
    kube = FakeKube(server_rv=90)
    run = Running(kube, start_rv="500", on_server_rewound=rewound.append)
    running.append(run)
    wait_until(lambda: rewound, 10, "the rewind reported")
    assert rewound[0] == SCOPE
    assert kube.watch_calls == 0  # never watched from the future
    assert run.writer.items == []  # and appended nothing


def test_while_the_spool_is_full_nothing_is_listed_then_the_requested_relist_runs(
    running: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    kube = FakeKube(objects={"a": 10}, watches=[([], "block")])
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: kube.watch_calls == 1, 10, "a watch open")
    lists = kube.lists
    # What the real writer does when it drops an event: overflow, and a relist request.
    run.writer.overflow.set()
    run.writer.relisters[SCOPE]("spool-full")
    wait_until(lambda: (kube.watch_calls == 1 and not run.reflector.api_ok) or True, 1, "")
    threading.Event().wait(0.2)
    assert kube.lists == lists  # paused: neither listing nor watching
    run.writer.overflow.clear()
    wait_until(lambda: run.relists("spool-full") == 1, 10, "the relist after the overflow")
    wait_until(run.ends, 10, "its end")


def test_a_resource_that_is_no_longer_served_is_purged_and_relisted_when_back(
    running: list[Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reflector, "RESOURCE_GONE_CONFIRM_S", 0.01)
    gone = [status_error(404, "the server could not find the requested resource")]

    def not_found_once() -> None:
        if gone:
            raise gone.pop()

    # Discovery says "not served" twice (the confirmation), then serves it again.
    kube = FakeKube(objects={"a": 10}, list_rv=150, fail_watch=not_found_once, not_served_for=2)
    run = Running(kube, start_rv="100", server_rv=lambda: "140")
    running.append(run)
    wait_until(lambda: run.relists("resource-returned") == 1, 10, "the relist once back")
    wait_until(lambda: len(run.ends()) == 2, 10, "two relist ends")
    purge, back = run.ends()
    assert (purge.rv, ev.decode_members(purge.members), purge.purge) == ("140", [], True)
    assert (back.rv, ev.decode_members(back.members), back.purge) == ("150", ["ns:a"], False)


def test_a_404_while_discovery_still_serves_the_resource_purges_nothing(
    running: list[Running],
) -> None:
    # The API server answers 404 for a custom resource for a while after a restart.
    gone = [status_error(404, "the server could not find the requested resource")]

    def not_found_once() -> None:
        if gone:
            raise gone.pop()

    kube = FakeKube(objects={"a": 10}, fail_watch=not_found_once)
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(run.ends, 10, "a relist")
    assert [e.purge for e in run.ends()] == [False]
    assert ev.decode_members(run.ends()[0].members) == ["ns:a"]


def test_a_relist_that_fails_midway_is_still_owed_and_done_later(running: list[Running]) -> None:
    # Redis lost this scope's writes: the relist must happen even if the API
    # server fails the first LIST (the watch alone would never bring them back).
    down = [KubeUnreachableError("https://api", "connection refused")]

    def unreachable_once() -> None:
        if down:
            raise down.pop()

    kube = FakeKube(objects={"a": 10}, watches=[([], "block"), ([], "block")])
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: kube.watch_calls == 1, 10, "a watch open")
    kube.fail_list = unreachable_once

    run.reflector.request_relist("redis-lost")

    wait_until(run.ends, 10, "the relist, done after the failure")
    assert run.relists("redis-lost") == 2  # the failed attempt, and the one that listed
    assert run.backoff.delays == 1  # it backed off in between, not spinning on the server


def test_a_relist_request_ends_a_back_off_wait(running: list[Running]) -> None:
    # The API server keeps failing the watch (a flapping connection): the reflector
    # backs off, 30 s here. Redis meanwhile loses the scope: its relist is tried at
    # once, not after the back-off.
    def unreachable() -> None:
        raise KubeUnreachableError("https://api", "connection reset")

    kube = FakeKube(objects={"a": 10}, fail_watch=unreachable)
    run = Running(kube, start_rv="100")
    run.reflector.backoff = Backoff(initial=30.0, maximum=30.0, jitter=0.0)
    running.append(run)
    wait_until(lambda: kube.watch_calls >= 1, 10, "a failed watch")

    run.reflector.request_relist("redis-lost")

    wait_until(run.ends, 5, "the relist, before the back-off ends")


def test_while_the_api_server_is_down_an_owed_relist_is_retried_at_the_back_off_pace(
    running: list[Running],
) -> None:
    def unreachable() -> None:
        raise KubeUnreachableError("https://api", "connection refused")

    kube = FakeKube(objects={"a": 10}, watches=[([], "block")])
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: kube.watch_calls == 1, 10, "a watch open")
    kube.fail_list = unreachable
    run.reflector.request_relist("redis-lost")
    wait_until(lambda: run.backoff.delays >= 3, 10, "a few attempts")
    run.halt()
    running.clear()
    # Each failed attempt backed off once: no spinning on a server that is down.
    assert run.relists("redis-lost") <= run.backoff.delays + 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_the_servers_load_or_restart_watches_again_from_the_same_rv(
    running: list[Running], status: int
) -> None:
    kube = FakeKube(watches=[([], status_error(status, "busy"))])
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: kube.watch_calls >= 2, 10, "the watch again")
    assert kube.lists == 0  # no relist: the same resourceVersion is still good
    assert run.backoff.delays >= 1


def test_another_4xx_backs_off_and_relists(running: list[Running]) -> None:
    kube = FakeKube(watches=[([], status_error(403, "forbidden"))])
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: run.relists("error"), 10, "a relist")
    assert run.backoff.delays >= 1


def test_a_watch_line_that_does_not_decode_relists(running: list[Running]) -> None:
    kube = FakeKube(watches=[([b"{not json"], "close")])
    run = Running(kube, start_rv="100")
    running.append(run)
    wait_until(lambda: run.relists("error"), 10, "a relist")
    assert kube.lists >= 1


def test_a_shards_reflector_keeps_its_namespaces_and_still_moves_its_checkpoint(
    running: list[Running],
) -> None:
    """--shards: an event of another shard's namespace is not appended, but its
    resourceVersion moves the checkpoint (so a restart does not resume from far back)."""
    other = [
        watch_line("ADDED", job("x", 101, "other")),
        watch_line("ADDED", job("y", 102, "else")),
    ]
    kube = FakeKube(watches=[([*other, watch_line("ADDED", job("b", 103))], "block")])
    run = Running(kube, start_rv="100", holds=lambda namespace: namespace == "ns")
    running.append(run)

    def appended() -> list[str]:
        with run.writer.lock:
            return [i.event.name for i in run.writer.items if i.event]

    wait_until(lambda: "b" in appended(), 10, "the event of the shard's own namespace")
    assert appended() == ["b"]
    with run.writer.lock:
        checkpoints = [i.rv for i in run.writer.items if i.event is None]
    # At most one a second: the first skipped event moves it, the second waits.
    assert checkpoints == ["101"]
