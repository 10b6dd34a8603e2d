"""Stream events built for tests: a Volcano Job's event, a relist's end."""

import json
import time

from common import events as ev

JOBS_RESOURCE = "jobs.batch.volcano.sh"


def job_object(name: str, rv: str, namespace: str = "ns", phase: str = "Pending") -> bytes:
    """A Job as the API server sends it, as far as the projector reads it."""
    return json.dumps(
        {
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
            "status": {"state": {"phase": phase}},
        },
        separators=(",", ":"),
    ).encode()


def job_event(
    type_: str,
    name: str,
    rv: str | int,
    namespace: str = "ns",
    *,
    obj: bytes | None = None,
    received_ns: int | None = None,
) -> ev.StreamEvent:
    """One Job's watch event (a marker's has no name, uid or object; a RELIST_END's
    members are then empty). The object is job_object unless given; DELETED has none."""
    marker = type_ in ev.MARKER_TYPES
    if obj is None:
        obj = b"" if marker or type_ == ev.DELETED else job_object(name, str(rv), namespace)
    return ev.StreamEvent(
        type=type_,
        resource=JOBS_RESOURCE,
        kind="job",
        namespace=namespace,
        name="" if marker else name,
        uid="" if marker else f"uid-{name}",
        rv=str(rv),
        object=obj,
        received_ns=time.time_ns() if received_ns is None else received_ns,
        members=ev.encode_members([]) if type_ == ev.RELIST_END else b"",
    )


def relist_end(
    rv: str | int, members: list[str] | bytes, namespace: str = "ns", *, purge: bool = False
) -> ev.StreamEvent:
    """The end of a relist of the namespace's Jobs that listed ``members`` (or raw
    bytes, to send a malformed list)."""
    return ev.StreamEvent(
        type=ev.RELIST_END,
        resource=JOBS_RESOURCE,
        kind="job",
        namespace=namespace,
        rv=str(rv),
        received_ns=time.time_ns(),
        members=members if isinstance(members, bytes) else ev.encode_members(members),
        purge=purge,
    )
