"""Redis is not the memory of record: the watcher's side of that rule.

Per scope the writer remembers the mark (a count of appends, see guard.lua) it
last wrote. Each append checks, in its own MULTI/EXEC, that Redis still holds
it; a quiet scope is checked the same way every second. Marks only grow, also
across a Redis that restarted empty (each append writes past the higher of
Redis's mark and ours). The verdicts:

| stored mark vs ours      | means                              | we do                       |
|--------------------------|------------------------------------|-----------------------------|
| equal                    | nothing lost                       | move the checkpoint         |
| missing or lower         | Redis lost writes of this scope    | keep the checkpoint, relist |
| higher, written by us    | our append ran twice (a retry)     | adopt it                    |
| higher, by someone else  | a second watcher writes this scope | log, count, carry on        |
| any, writer noted a loss | a loss whose reply was lost        | keep the checkpoint, relist |

A scope owes a relist from the moment a loss is found (or an event of it was
dropped) until a relist that *began after that moment* has been appended to its
end: until then its checkpoint never moves, so a watcher restarted meanwhile
cannot resume past what was lost.

Only the writer thread calls into a ScopeGuard.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import msgspec

from common import events as ev
from common.resp import Arg

GUARD_SOURCE: Final = Path(__file__).with_name("guard.lua").read_bytes()

APPEND: Final = b"append"
CHECK: Final = b"check"
# guard.lua's note on a scope's writer: a loss found there and not yet owed by the
# watcher (its reply may never have arrived).
LOST_NOTE: Final = " lost"


class Loss(msgspec.Struct, frozen=True):
    """Redis holds an older mark for scope than the watcher wrote ("" = none)."""

    scope: str
    stored: str
    expected: int


class Conflict(msgspec.Struct, frozen=True):
    """Someone else moved scope's mark past ours: a second watcher."""

    scope: str
    stored: int
    expected: int


class Verdict(msgspec.Struct, frozen=True):
    losses: list[Loss]
    conflicts: list[Conflict]


class Plan(msgspec.Struct, frozen=True):
    """What one append writes: the checkpoints allowed to move, the scopes it
    touches, and which relists it completes (if it goes through)."""

    checkpoints: dict[str, str]
    scopes: list[str]
    owed_after: dict[str, bool]
    # Scopes owing a relist not yet begun when the append was planned: that relist
    # covers any loss found now. (A loss once the relist has begun may take its
    # BEGIN and pages with it, so it must be noted, and owed again.)
    owed_before: frozenset[str] = frozenset()


class ScopeGuard:
    """Marks last written, and the relists scopes owe."""

    def __init__(self, writer_id: str = "") -> None:
        self.writer_id = writer_id
        self.expected: dict[str, int] = {}
        # scope -> has a relist begun since the loss? (True once its BEGIN is appended)
        self.owed: dict[str, bool] = {}

    def load(self, marks: dict[str, int]) -> None:
        """The marks Redis (or the spool) held when the watcher started."""
        self.expected.update(marks)

    def awaiting_relist(self) -> frozenset[str]:
        """Scopes owing a relist that has not begun: it covers any loss found now."""
        return frozenset(scope for scope, begun in self.owed.items() if not begun)

    def owe_relist(self, scope: str) -> None:
        """From now on scope's checkpoint stays until a relist begun after now ends."""
        self.owed[scope] = False

    def plan(self, writes: Sequence[tuple[str, str]], checkpoints: dict[str, str]) -> Plan:
        """writes: (scope, entry type) in append order."""
        owed = dict(self.owed)
        writes = [(scope, kind) for scope, kind in writes if scope]  # "": unknown (old spool)
        for scope, kind in writes:
            if scope not in owed:
                continue
            if kind == ev.RELIST_BEGIN:
                owed[scope] = True
            elif kind == ev.RELIST_END and owed[scope]:
                del owed[scope]
        scopes = list(dict.fromkeys([*(s for s, _ in writes), *checkpoints]))
        allowed = {s: rv for s, rv in checkpoints.items() if s not in owed}
        return Plan(allowed, scopes, owed, self.awaiting_relist())

    def append_args(self, plan: Plan) -> list[Arg]:
        """guard.lua's ARGV for an append (its call ends the append's MULTI/EXEC)."""
        args: list[Arg] = [APPEND, self.writer_id]
        for scope in plan.scopes:
            owed = "1" if scope in plan.owed_before else ""
            args += (scope, self._expected_arg(scope), plan.checkpoints.get(scope, ""), owed)
        return args

    def check_args(self, ours: Iterable[str]) -> tuple[list[Arg], list[str]]:
        """guard.lua's ARGV for a read-only check of our scopes that have a mark, and
        the scopes it covers."""
        scopes = sorted(set(ours) & set(self.expected))
        args: list[Arg] = [CHECK, self.writer_id]
        awaiting = self.awaiting_relist()
        for scope in scopes:
            args += (scope, str(self.expected[scope]), "", "1" if scope in awaiting else "")
        return args, scopes

    def committed(self, plan: Plan, reply: object) -> Verdict:
        """The append went through: adopt its marks and relist state; judge it."""
        self.owed = dict(plan.owed_after)
        flat = _strings(reply)
        verdict = self._judge(plan.scopes, flat[0::3], flat[1::3], plan.owed_before)
        for scope, new in zip(plan.scopes, flat[2::3], strict=True):
            self.expected[scope] = int(new)
        for loss in verdict.losses:
            self.owe_relist(loss.scope)
        return verdict

    def checked(self, scopes: list[str], reply: object) -> Verdict:
        flat = _strings(reply)
        verdict = self._judge(scopes, flat[0::2], flat[1::2], self.awaiting_relist())
        for scope, stored in zip(scopes, flat[0::2], strict=True):
            if stored and int(stored) > self.expected.get(scope, 0):
                self.expected[scope] = int(stored)  # a second writer's, or our own repeat
        for loss in verdict.losses:
            # guard.lua put our mark back: a later, older copy of Redis still shows.
            self.owe_relist(loss.scope)
        return verdict

    def _judge(
        self,
        scopes: Iterable[str],
        stored_marks: list[str],
        writers: list[str],
        owed: frozenset[str],
    ) -> Verdict:
        losses: list[Loss] = []
        conflicts: list[Conflict] = []
        for scope, stored, writer in zip(scopes, stored_marks, writers, strict=True):
            expected = self.expected.get(scope)
            noted = writer.endswith(LOST_NOTE) and scope not in owed
            if expected is None and not noted:
                continue
            if noted or not stored or int(stored) < (expected or 0):
                losses.append(Loss(scope, stored, expected or 0))
            elif (
                expected is not None
                and int(stored) > expected
                and (writer.removesuffix(LOST_NOTE) != self.writer_id)
            ):
                conflicts.append(Conflict(scope, int(stored), expected))
        return Verdict(losses, conflicts)

    def _expected_arg(self, scope: str) -> str:
        expected = self.expected.get(scope)
        return "" if expected is None else str(expected)


def _strings(reply: object) -> list[str]:
    if not isinstance(reply, list):
        raise TypeError(f"unexpected guard reply {reply!r}")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
