"""Property-based (Hypothesis, with shrinking) against a real redis-server: any
history the API server can produce, delivered in any order with repeats (several
projectors, reclaims, replays), ends in the state the history ends in."""

import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common import events as ev
from common.keys import Keys
from projector.scripts import Ack, Mode
from tests.support.apply import apply_events, mirror_state
from tests.support.events import job_event, relist_end
from tests.support.relist import Run, apply_one, index_drift, leftovers, scan_in_chunks

KEYS = Keys()
NAMES = ("a", "b", "c")
REPLAY = Ack(Mode.REPLAY, "", "0-0")


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[ev.StreamEvent], dict[str, int]]:
    """A watch history of a few objects (created, modified, deleted, created again
    under the same name) with relists in it; and what is live at its end."""
    rv = 10
    live: dict[str, int] = {}
    events: list[ev.StreamEvent] = []
    for _ in range(draw(st.integers(1, 20))):
        rv += 1
        action = draw(st.sampled_from(("write", "delete", "relist")))
        name = draw(st.sampled_from(NAMES))
        if action == "write":
            events.append(job_event(ev.MODIFIED if name in live else ev.ADDED, name, str(rv)))
            live[name] = rv
        elif action == "delete" and name in live:
            events.append(job_event(ev.DELETED, name, str(rv)))
            del live[name]
        elif action == "relist":
            events += [job_event(ev.SYNC, n, str(v)) for n, v in sorted(live.items())]
            events.append(relist_end(str(rv), [f"ns:{n}" for n in sorted(live)]))
    return events, live


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_order_with_repeats_ends_in_the_history_s_final_state(
    r: "redis.Redis", data: st.DataObject
) -> None:
    events, live = data.draw(histories())
    assume(events)
    delivered = data.draw(st.permutations(events))
    delivered += data.draw(st.lists(st.sampled_from(events), max_size=5))

    r.flushdb()
    apply_events(r, events)
    in_order = mirror_state(r)
    r.flushdb()
    apply_events(r, delivered)

    assert mirror_state(r) == in_order
    members = sorted(m.decode() for m in r.smembers(KEYS.index("job")))  # type: ignore[union-attr]
    stored = {
        m.split(":")[1]: r.hget(KEYS.state("job", "ns", m.split(":")[1]), "rv") for m in members
    }
    assert stored == {name: str(rv).encode() for name, rv in live.items()}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_relists_in_chunks_interleaved_with_everything_end_in_the_history_s_final_state(
    r: "redis.Redis", data: st.DataObject
) -> None:
    """As above, with each RELIST_END a run of calls at the smallest chunks (a call
    per member staged, per member scanned) and which call goes next drawn at every
    call: the relist's calls interleave with object events, with other relists of
    the scope, and with its own repeats (a redelivery, a reclaim while it runs). A
    run may also be killed between two calls (at most twice per entry): its entry
    is then run again from the start by another consumer, as a reclaim does."""
    events, live = data.draw(histories())
    assume(any(e.type == ev.RELIST_END for e in events))
    delivered = data.draw(st.permutations(events))
    delivered += data.draw(st.lists(st.sampled_from(events), max_size=5))

    scan_in_chunks(r)
    r.flushdb()
    apply_events(r, events)
    in_order = mirror_state(r)
    r.flushdb()
    runs: list[Run | ev.StreamEvent] = [
        Run(r, e, REPLAY) if e.type == ev.RELIST_END else e for e in delivered
    ]
    active = list(range(len(runs)))
    kills = 0
    for _ in range(10_000):
        if not active:
            break
        i = data.draw(st.sampled_from(active))
        run = runs[i]
        if isinstance(run, Run):
            if kills < 2 * len(runs) and data.draw(st.integers(0, 9)) == 0:
                run.kill()
                kills += 1
                runs.append(Run(r, run.event, REPLAY))
                active.append(len(runs) - 1)
            else:
                run.step()
                if not run.done:
                    continue
        else:
            apply_one(r, run)
        active.remove(i)
    assert not active

    assert mirror_state(r) == in_order
    members = sorted(m.decode() for m in r.smembers(KEYS.index("job")))  # type: ignore[union-attr]
    stored = {
        m.split(":")[1]: r.hget(KEYS.state("job", "ns", m.split(":")[1]), "rv") for m in members
    }
    assert stored == {name: str(rv).encode() for name, rv in live.items()}
    assert index_drift(r) == []
    assert leftovers(r) == []
