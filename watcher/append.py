"""The watcher's one write: stream entries, then the guard call that checks
Redis still holds what it was given and moves the checkpoints (watcher/guard.py),
in one MULTI/EXEC packed by hand (see common/resp.py for why)."""

from common.events import StreamEvent, to_fields
from common.resp import Arg, Batch


def xadd_args(stream: bytes, event: StreamEvent) -> list[Arg]:
    """XADD stream * with the event's fields."""
    args: list[Arg] = [b"XADD", stream, b"*"]
    for name, value in to_fields(event).items():
        args += (name, value)
    return args


def append_batch(stream: bytes, entries: list[StreamEvent]) -> Batch:
    """The XADDs of one append; the caller adds the guard call last, in the same
    MULTI/EXEC, so the checkpoint never runs ahead of the stream."""
    batch = Batch()
    for event in entries:
        batch.add(*xadd_args(stream, event))
    return batch
