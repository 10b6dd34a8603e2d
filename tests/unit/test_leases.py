"""The shard leases' decisions (watcher/leases.py) against an in-memory Lease API
that behaves as the API server does where it matters: every write gets the next
resourceVersion of the whole store (etcd's revision), and a write naming an older
resourceVersion is refused with 409. The real API server runs the same in
tests/integration/test_fleet.py."""

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.kube import KubeError, status_error
from watcher import fleet
from watcher.fleet import ChildrenMetrics, FleetConfig, ordinal_of, preferred
from watcher.leases import Action, Lease, LeaseSettings, Observed, ShardLease, decide

SETTINGS = LeaseSettings(duration_s=15, renew_deadline_s=10.0, retry_period_s=2.0)
NAME = "k2r-shard-0"


@dataclass
class FakeLeases:
    leases: dict[str, Lease] = field(default_factory=dict)
    revision: int = 100
    failure: KubeError | None = None

    def _answer(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _write(self, lease: Lease) -> Lease:
        self.revision += 1
        written = Lease(
            lease.name, str(self.revision), lease.holder, lease.duration_s, lease.transitions
        )
        self.leases[lease.name] = written
        return written

    def get(self, name: str) -> Lease | None:
        self._answer()
        return self.leases.get(name)

    def create(self, name: str, holder: str, duration_s: int) -> Lease:
        self._answer()
        if name in self.leases:
            raise status_error(409, "already exists")
        return self._write(Lease(name, "", holder, duration_s))

    def update(self, lease: Lease, holder: str, duration_s: int, acquire: bool) -> Lease:
        self._answer()
        if self.leases[lease.name].rv != lease.rv:
            raise status_error(409, "the object has been modified")
        transitions = lease.transitions + (1 if acquire else 0)
        return self._write(Lease(lease.name, "", holder, duration_s, transitions))

    def delete(self, name: str) -> None:
        self.revision += 1
        del self.leases[name]


def _lease(holder: str, rv: str = "5") -> Lease:
    return Lease(NAME, rv, holder, 15)


@pytest.mark.parametrize(
    ("lease", "observed", "holding", "now", "create", "expected"),
    [
        (None, None, False, 0.0, True, Action.CREATE),  # the preferred owner creates
        (None, None, False, 0.0, False, Action.WAIT),  # others give it a grace period
        (None, Observed("", 0.0), False, 14.9, False, Action.WAIT),
        (None, Observed("", 0.0), False, 15.0, False, Action.CREATE),
        (_lease("me"), Observed("5", 0.0), True, 1.0, False, Action.RENEW),
        (_lease("me"), None, False, 0.0, False, Action.ACQUIRE),  # our restarted process
        (_lease(""), None, False, 0.0, False, Action.ACQUIRE),  # released
        (_lease("other"), None, False, 100.0, True, Action.WAIT),  # first sight: wait
        (_lease("other", "6"), Observed("5", 0.0), False, 100.0, True, Action.WAIT),  # renewed
        (_lease("other"), Observed("5", 0.0), False, 14.9, True, Action.WAIT),
        (_lease("other"), Observed("5", 0.0), False, 15.0, False, Action.ACQUIRE),  # expired
    ],
)
def test_what_to_do_with_a_lease(
    lease: Lease | None,
    observed: Observed | None,
    holding: bool,
    now: float,
    create: bool,
    expected: Action,
) -> None:
    assert decide(lease, observed, "me", holding, now, 15.0, create) is expected


def test_a_standby_takes_over_an_expired_lease_with_a_higher_token() -> None:
    api = FakeLeases()
    owner = ShardLease(NAME, "pod-0", SETTINGS, preferred=True)
    standby = ShardLease(NAME, "pod-1", SETTINGS, preferred=False)
    first = owner.tick(api, 0.0).acquired
    assert first is not None
    for now in (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0):
        assert standby.tick(api, now).acquired is None  # renewed: never expires
        assert owner.tick(api, now).lost == ""
    # The owner dies: the record stops changing; the standby takes it once it has
    # seen the same record for a whole lease duration.
    assert standby.tick(api, 20.0).acquired is None
    assert standby.tick(api, 34.9).acquired is None
    second = standby.tick(api, 35.0).acquired
    assert second is not None and second > first
    assert api.leases[NAME].holder == "pod-1" and api.leases[NAME].transitions == 1
    # The old owner comes back: told at once that it is someone else's.
    step = owner.tick(api, 36.0)
    assert step.lost == "pod-1 holds it now" and owner.held is None
    assert owner.tick(api, 38.0).acquired is None  # and waits, as a standby


def test_an_owner_that_cannot_renew_gives_up_by_its_renew_deadline() -> None:
    api = FakeLeases()
    owner = ShardLease(NAME, "pod-0", SETTINGS, preferred=True)
    assert owner.tick(api, 0.0).acquired is not None
    api.failure = KubeError(None, "API server unreachable")
    assert owner.tick(api, 2.0).lost == ""
    assert owner.overdue(9.9).lost == ""
    lost = owner.overdue(10.0).lost
    assert lost.startswith("not renewed for 10.0s") and owner.held is None
    # Before anyone could take it over (a lease duration after the last renew).
    assert SETTINGS.renew_deadline_s < SETTINGS.duration_s


@dataclass
class _ReadBefore:
    """The API as a candidate that read the lease before another one wrote it."""

    api: FakeLeases
    read: Lease

    def get(self, name: str) -> Lease | None:
        return self.read

    def create(self, name: str, holder: str, duration_s: int) -> Lease:
        return self.api.create(name, holder, duration_s)

    def update(self, lease: Lease, holder: str, duration_s: int, acquire: bool) -> Lease:
        return self.api.update(lease, holder, duration_s, acquire)


def test_of_two_candidates_racing_for_an_expired_lease_one_wins() -> None:
    api = FakeLeases()
    api.leases[NAME] = _lease("dead", "50")
    a = ShardLease(NAME, "pod-a", SETTINGS, preferred=False)
    b = ShardLease(NAME, "pod-b", SETTINGS, preferred=False)
    a.tick(api, 0.0)
    b.tick(api, 0.0)
    read = api.leases[NAME]
    assert a.tick(api, 15.0).acquired is not None
    # b read the same expired record; its write names that resourceVersion: 409.
    assert b.tick(_ReadBefore(api, read), 15.0).acquired is None
    assert b.held is None and b.last_error == "the object has been modified"
    assert api.leases[NAME].holder == "pod-a"


def test_a_renew_refused_with_409_is_a_lost_lease() -> None:
    api = FakeLeases()
    owner = ShardLease(NAME, "pod-0", SETTINGS, preferred=True)
    owner.tick(api, 0.0)
    api.failure = status_error(409, "the object has been modified")
    assert owner.tick(api, 2.0).lost == "another candidate wrote it (409 Conflict)"


def test_the_token_grows_across_a_deleted_and_recreated_lease() -> None:
    """leaseTransitions would start again at 0; the resourceVersion does not."""
    api = FakeLeases()
    owner = ShardLease(NAME, "pod-0", SETTINGS, preferred=True)
    first = owner.tick(api, 0.0).acquired
    api.delete(NAME)
    assert owner.tick(api, 2.0).lost == "nobody (deleted) holds it now"
    second = owner.tick(api, 4.0).acquired
    assert first is not None and second is not None and second > first
    assert api.leases[NAME].transitions == 0


def test_a_released_lease_is_taken_at_once() -> None:
    api = FakeLeases()
    owner = ShardLease(NAME, "pod-0", SETTINGS, preferred=True)
    standby = ShardLease(NAME, "pod-1", SETTINGS, preferred=False)
    owner.tick(api, 0.0)
    standby.tick(api, 1.0)
    owner.release(api)
    assert api.leases[NAME].holder == ""
    assert standby.tick(api, 2.0).acquired is not None


def test_ordinals_and_preferred_shards() -> None:
    assert ordinal_of("kube2redis-watchers-2") == 2
    with pytest.raises(ValueError, match="--ordinal"):
        ordinal_of("laptop")
    assert [s for s in range(5) if preferred(s, 1, 2)] == [1, 3]
    assert [s for s in range(5) if preferred(s, 0, 2)] == [0, 2, 4]


@dataclass
class _Child:
    shard: int
    body: str

    def get(self, path: str) -> tuple[int, str]:
        return 200, self.body


def test_the_childrens_metrics_are_one_family_each_labelled_by_shard() -> None:
    body = (
        "# HELP kube2redis_watcher_events_out_total Entries appended\n"
        "# TYPE kube2redis_watcher_events_out_total counter\n"
        "kube2redis_watcher_events_out_total {n}\n"
    )
    children = [_Child(0, body.format(n=3)), _Child(1, body.format(n=5))]
    families = list(ChildrenMetrics(lambda: children).collect())  # type: ignore[arg-type, return-value]
    registry = CollectorRegistry()
    registry.register(ChildrenMetrics(lambda: children))  # type: ignore[arg-type, return-value]
    parsed = list(text_string_to_metric_families(generate_latest(registry).decode()))
    assert len(families) == 1 and len(parsed) == 1
    assert {
        (s.labels["shard"], s.value) for s in parsed[0].samples if s.name.endswith("_total")
    } == {
        ("0", 3.0),
        ("1", 5.0),
    }


class _StandInChild:
    """In place of a watcher process: the fleet's lease loop is under test here."""

    def __init__(self, config: FleetConfig, shard: int, token: int) -> None:
        self.proc = subprocess.Popen(["sleep", "60"])  # a real process, stopped by pid

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)

    def stop(self, timeout_s: float) -> None:
        self.kill()

    def get(self, path: str) -> tuple[int, str]:
        return 0, ""  # no metrics to merge


def test_many_shards_on_a_slow_api_server_keep_their_leases(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by an adversarial review: the leases were ticked one after another, so a
    round over 16 shards at 50 ms a call (1.6 s) outlasted the renew deadline (1 s)
    and the first shards' leases were given up and taken again every round, their
    watchers killed, with no other replica anywhere. Ticked side by side, they hold."""

    class SlowLeases(FakeLeases):
        lock = threading.Lock()

        def _answer(self) -> None:
            time.sleep(0.05)
            super()._answer()

        def _write(self, lease: Lease) -> Lease:
            with self.lock:
                return super()._write(lease)

    monkeypatch.setattr(fleet, "Child", _StandInChild)
    shards = 16
    config = FleetConfig(
        replicas=1,
        ordinal=0,
        shards=shards,
        identity="replica-0",
        lease_prefix="k2r",
        spool_dir=tmp_path,
        leases=LeaseSettings(duration_s=2, renew_deadline_s=1.0, retry_period_s=0.1),
    )
    the_fleet = fleet.Fleet(config, SlowLeases())
    try:
        for _ in range(5):
            the_fleet.step()
        registry = the_fleet.metrics.registry
        for shard in map(str, range(shards)):
            lost = registry.get_sample_value(
                "kube2redis_fleet_lease_losses_total", {"shard": shard}
            )
            taken = registry.get_sample_value(
                "kube2redis_fleet_lease_acquisitions_total", {"shard": shard}
            )
            assert (lost or 0, taken) == (0, 1), f"shard {shard}: lost {lost}, taken {taken}"
    finally:
        the_fleet.stop()
