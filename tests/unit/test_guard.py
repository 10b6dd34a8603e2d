"""The guard's decisions (watcher/guard.py), on replies shaped as guard.lua's
(per scope: the stored mark, its writer and, for an append, the new mark): which
checkpoints move, when a relist is owed and when it is paid."""

from common import events as ev
from watcher.guard import Conflict, Loss, ScopeGuard

JOBS, PODS = "jobs.batch.volcano.sh/*", "pods/*"
ME, OTHER = b"host-1", b"host-2"


def test_an_owed_relist_holds_the_checkpoint_until_a_relist_begun_after_it_ends() -> None:
    guard = ScopeGuard(ME.decode())
    guard.owe_relist(JOBS)

    # A relist that began before the debt (its END alone) does not pay it.
    plan = guard.plan([(JOBS, ev.RELIST_END), (PODS, ev.ADDED)], {JOBS: "20", PODS: "21"})
    assert plan.checkpoints == {PODS: "21"}
    guard.committed(plan, [b"", b"", 1, b"", b"", 1])
    assert guard.owed == {JOBS: False}

    # Its BEGIN in one append, its END in a later one: paid with the END's append.
    plan = guard.plan([(JOBS, ev.RELIST_BEGIN), (JOBS, ev.SYNC)], {})
    guard.committed(plan, [b"1", ME, 2])
    assert guard.owed == {JOBS: True}
    plan = guard.plan([(JOBS, ev.SYNC), (JOBS, ev.RELIST_END), (JOBS, ev.ADDED)], {JOBS: "31"})
    assert plan.checkpoints == {JOBS: "31"}
    guard.committed(plan, [b"2", ME, 3])
    assert guard.owed == {}


def test_a_plan_that_does_not_go_through_changes_nothing() -> None:
    guard = ScopeGuard(ME.decode())
    guard.owe_relist(JOBS)
    guard.plan([(JOBS, ev.RELIST_BEGIN), (JOBS, ev.RELIST_END)], {JOBS: "9"})
    assert guard.owed == {JOBS: False}  # only committed() adopts a plan


def test_marks_missing_or_lower_are_losses_and_higher_is_a_second_writer() -> None:
    guard = ScopeGuard(ME.decode())
    guard.load({JOBS: 5, PODS: 5, "queues/*": 5})
    plan = guard.plan([(JOBS, ev.ADDED), (PODS, ev.ADDED), ("queues/*", ev.ADDED)], {})

    # guard.lua writes past the higher of Redis's mark and ours.
    verdict = guard.committed(plan, [b"", b"", 6, b"3", ME, 6, b"9", OTHER, 10])

    assert verdict.losses == [Loss(JOBS, "", 5), Loss(PODS, "3", 5)]
    assert verdict.conflicts == [Conflict("queues/*", 9, 5)]
    assert guard.owed == {JOBS: False, PODS: False}
    assert guard.expected == {JOBS: 6, PODS: 6, "queues/*": 10}


def test_a_scope_never_written_cannot_have_lost_anything() -> None:
    guard = ScopeGuard(ME.decode())
    plan = guard.plan([(JOBS, ev.RELIST_BEGIN)], {})
    assert guard.committed(plan, [b"", b"", 1]).losses == []


def test_the_periodic_check_finds_a_quiet_scope_lost_and_keeps_our_mark() -> None:
    guard = ScopeGuard(ME.decode())
    guard.load({JOBS: 7, PODS: 7})
    verdict = guard.checked([JOBS, PODS], [b"", b"", b"7", ME])
    assert verdict.losses == [Loss(JOBS, "", 7)]
    # guard.lua put 7 back: the next check finds nothing new (one loss, one relist),
    # and a copy of Redis older still (a snapshot from before a restart) is a loss.
    assert guard.expected == {JOBS: 7, PODS: 7}
    assert guard.owed == {JOBS: False}
    assert guard.checked([JOBS, PODS], [b"7", ME, b"7", ME]).losses == []


def test_entries_of_unknown_scope_from_old_spool_records_are_ignored() -> None:
    guard = ScopeGuard(ME.decode())
    plan = guard.plan([("", ev.ADDED), (JOBS, ev.ADDED)], {JOBS: "3"})
    assert plan.scopes == [JOBS]


def test_a_mark_past_ours_that_we_wrote_is_our_own_append_sent_twice() -> None:
    # A timeout after EXEC ran: the client sends the append again, and Redis
    # counts it twice. Not a second watcher.
    guard = ScopeGuard(ME.decode())
    guard.load({JOBS: 5})
    plan = guard.plan([(JOBS, ev.ADDED)], {})
    verdict = guard.committed(plan, [b"6", ME, 7])
    assert verdict.conflicts == [] and verdict.losses == []
    assert guard.expected == {JOBS: 7}
    assert guard.checked([JOBS], [b"8", ME]).conflicts == []
    assert guard.expected == {JOBS: 8}


def test_a_loss_noted_in_redis_is_a_loss_until_the_scope_owes_its_relist() -> None:
    # The check that found it ran, but its reply never came back: guard.lua left
    # the note on the writer, and the mark it put back looks like ours.
    guard = ScopeGuard(ME.decode())
    guard.load({JOBS: 7})
    assert guard.checked([JOBS], [b"7", ME + b" lost"]).losses == [Loss(JOBS, "7", 7)]
    assert guard.owed == {JOBS: False}
    # Owed now: the note says nothing new, and the next append carries "owed".
    assert guard.checked([JOBS], [b"7", ME + b" lost"]).losses == []
    plan = guard.plan([(JOBS, ev.RELIST_BEGIN)], {})
    assert plan.owed_before == {JOBS}
    assert guard.committed(plan, [b"7", ME + b" lost", 8]).losses == []


def test_a_note_left_by_an_earlier_process_of_this_watcher_is_a_loss_too() -> None:
    guard = ScopeGuard(ME.decode())
    guard.load({JOBS: 7})
    plan = guard.plan([(JOBS, ev.ADDED)], {JOBS: "40"})
    verdict = guard.committed(plan, [b"7", OTHER + b" lost", 8])
    assert verdict.losses == [Loss(JOBS, "7", 7)] and verdict.conflicts == []
    assert guard.owed == {JOBS: False}


def test_a_loss_once_the_relist_has_begun_is_noted_and_owed_again() -> None:
    # The loss may have taken the relist's BEGIN and pages with it: that relist
    # does not cover it, so its END must not move the checkpoint.
    guard = ScopeGuard(ME.decode())
    guard.load({JOBS: 2})
    guard.owe_relist(JOBS)
    plan = guard.plan([(JOBS, ev.RELIST_BEGIN), (JOBS, ev.SYNC)], {})
    assert plan.owed_before == {JOBS}
    guard.committed(plan, [b"2", ME, 3])
    assert guard.owed == {JOBS: True}
    assert guard.awaiting_relist() == frozenset()  # begun: appends carry no "owed"

    # Redis went back to 2, the check that found it lost its reply: the note tells.
    verdict = guard.checked([JOBS], [b"3", ME + b" lost"])
    assert verdict.losses == [Loss(JOBS, "3", 3)]
    assert guard.owed == {JOBS: False}  # a new relist, begun after this, is owed
    plan = guard.plan([(JOBS, ev.RELIST_END)], {JOBS: "20"})
    assert plan.checkpoints == {}
