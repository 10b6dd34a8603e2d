"""The watcher's one write: stream entries and the checkpoints they carry, in
one MULTI/EXEC packed by hand (see common/resp.py for why)."""

from common.events import StreamEvent, to_fields
from common.resp import Arg, Batch


def xadd_args(stream: bytes, event: StreamEvent) -> list[Arg]:
    """XADD stream * with the event's fields."""
    args: list[Arg] = [b"XADD", stream, b"*"]
    for name, value in to_fields(event).items():
        args += (name, value)
    return args


def append_batch(
    stream: bytes, checkpoints_key: bytes, entries: list[StreamEvent], checkpoints: dict[str, str]
) -> Batch:
    """The commands of one append: every entry, then the checkpoints."""
    batch = Batch()
    for event in entries:
        batch.add(*xadd_args(stream, event))
    if checkpoints:
        # Same MULTI/EXEC as the entries: the checkpoint never runs ahead of the stream.
        batch.add(b"HSET", checkpoints_key, *(x for kv in checkpoints.items() for x in kv))
    return batch
