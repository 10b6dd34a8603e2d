"""A RELIST_END's run of calls (projector/scripts.py Scripts.relist_end) driven a
call at a time against a real Redis, so a test can put other work between its
calls, or stop it for good between two (a consumer killed there)."""

import contextlib
from collections import Counter

import redis

from common import events as ev
from common.keys import Keys
from common.resp import Batch
from projector.scripts import Ack, ApplySettings, Mode, Scripts
from projector.verify import verify_indexes
from tests.support.redis_server import read_stream

KEYS = Keys()
# The smallest chunks: every relist of a few objects takes several calls of each step
# (a scan finds a few members, each deleted in a call of its own).
TINY = ApplySettings(relist_stage_chunk=1, relist_scan_count=2, relist_sweep_chunk=1)


def scan_in_chunks(r: "redis.Redis") -> None:
    """Make SSCAN return a few members a call, as it does for a large set. Redis 7.2+
    keeps a small set as a listpack, which SSCAN returns whole whatever its COUNT;
    7.0 (no such setting) keeps every set of names as a hash table already."""
    with contextlib.suppress(redis.ResponseError):
        r.config_set("set-max-listpack-entries", 0)


class Run:
    """One consumer's run of one RELIST_END entry."""

    def __init__(
        self, r: "redis.Redis", event: ev.StreamEvent, ack: Ack, settings: ApplySettings = TINY
    ) -> None:
        self.r, self.event = r, event
        self.steps = Scripts(KEYS, settings).relist_end(event, ack)
        self.batch: Batch | None = next(self.steps)  # packs the first call, sends nothing
        self.replies: list[object] = []  # every reply, in order
        self.answer: object = None

    @property
    def done(self) -> bool:
        return self.batch is None

    def step(self) -> object:
        """Send the next call; its reply."""
        assert self.batch is not None, "the run has ended"
        (reply,) = self.batch.send(self.r)
        self.replies.append(reply)
        if isinstance(reply, redis.RedisError):
            raise reply
        try:
            self.batch = self.steps.send([reply])
        except StopIteration as end:
            self.batch, self.answer = None, end.value
        return reply

    def until(self, reply: bytes, bound: int = 1000) -> None:
        """Step until a call answers `reply` (a step's name)."""
        for _ in range(bound):
            if self.step() == reply:
                return
        raise AssertionError(f"no {reply!r} in {bound} calls")

    def until_swept(self, bound: int = 1000) -> None:
        """Step until a sweep call deleted something (and the run has not ended)."""
        for _ in range(bound):
            reply = self.step()
            if isinstance(reply, list) and isinstance(reply[0], int) and reply[0] > 0:
                assert not self.done, "the run ended with its first deletes"
                return
        raise AssertionError(f"nothing swept in {bound} calls")

    def finish(self, bound: int = 10_000) -> object:
        for _ in range(bound):
            if self.done:
                return self.answer
            self.step()
        raise AssertionError(f"no end in {bound} calls")

    def kill(self) -> None:
        """The consumer dies here: no further call is ever sent."""
        self.steps.close()
        self.batch = None


def apply_one(r: "redis.Redis", event: ev.StreamEvent, ack: Ack | None = None) -> bytes:
    """One object event through apply.lua (replay mode unless ack given): its outcome."""
    scripts, batch = Scripts(KEYS, ApplySettings()), Batch()
    scripts.apply(batch, event, ack or Ack(Mode.REPLAY, "", "0-0"))
    (reply,) = batch.send(r)
    if isinstance(reply, redis.RedisError):
        raise reply
    assert isinstance(reply, bytes)
    return reply


def index_drift(r: "redis.Redis") -> list[str]:
    """What verify finds wrong in the Job indexes, counters and records."""
    found = verify_indexes(r, KEYS, "job", lambda _: True, whole_kind=True)
    return [f"{d.member} {d.problem} {d.detail}" for d in found]


def deletes_fed(r: "redis.Redis") -> Counter[str]:
    """State key -> how many DELETED entries the change feed holds for it."""
    return Counter(
        fields[b"key"].decode()
        for _, fields in read_stream(r, KEYS.changes)
        if fields[b"type"] == b"DELETED"
    )


def leftovers(r: "redis.Redis") -> list[str]:
    """Keys a finished relist must not leave: staging sets, a sweep's set."""
    patterns = (KEYS.relist_staging("*", "*", "*"), KEYS.relist_sweep("*", "*"))
    return sorted(k.decode() for p in patterns for k in r.scan_iter(match=p))
