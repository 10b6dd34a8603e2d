"""Partial decoders for Kubernetes JSON: only the few fields kube2redis needs.

Objects travel as the raw bytes the API server sent; msgspec reads their
metadata without building a model, which is what keeps the watcher cheap.
"""

from typing import Final

import msgspec

from common.indexes import values_of


class ObjectMeta(msgspec.Struct):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resourceVersion: str = ""  # noqa: N815 - Kubernetes field name
    annotations: dict[str, str] | None = None


class ObjectHead(msgspec.Struct):
    """An object with everything but its metadata left undecoded."""

    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)


class Status(msgspec.Struct):
    """A metav1.Status, as sent in ERROR watch events and error responses."""

    code: int = 0
    reason: str = ""
    message: str = ""


class WatchLine(msgspec.Struct):
    """One line of a watch response; ``object`` keeps its exact bytes."""

    type: str
    object: msgspec.Raw


class ListMeta(msgspec.Struct):
    resourceVersion: str = ""  # noqa: N815
    # "continue" is a Python keyword.
    next_page: str = msgspec.field(default="", name="continue")


class ListPage(msgspec.Struct):
    """One page of a LIST; each item keeps its exact bytes."""

    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[msgspec.Raw] | None = None


decode_head = msgspec.json.Decoder(ObjectHead).decode
decode_status = msgspec.json.Decoder(Status).decode
decode_watch_line = msgspec.json.Decoder(WatchLine).decode
decode_list_page = msgspec.json.Decoder(ListPage).decode

BOOKMARK_INITIAL_EVENTS_END = "k8s.io/initial-events-end"


def phase_of(raw: bytes) -> str:
    """The object's phase where it has one: Pod/PodGroup ``status.phase``,
    Volcano Job ``status.state.phase``, Queue ``status.state``; else ""."""
    return values_of(raw).phase


_MANAGED_FIELDS: Final = b'"managedFields"'


def without_managed_fields(obj: bytes) -> bytes:
    """The object without metadata.managedFields (server-side apply's bookkeeping,
    often half an object's size), for --drop-managed-fields. Every other field is
    kept, in its order; an object without them is returned as it came."""
    if _MANAGED_FIELDS not in obj:
        return obj
    decoded = msgspec.json.decode(obj)
    metadata = decoded.get("metadata") if isinstance(decoded, dict) else None
    if not isinstance(metadata, dict) or metadata.pop("managedFields", None) is None:
        return obj
    return msgspec.json.encode(decoded)
