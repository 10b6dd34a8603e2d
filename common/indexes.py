"""The secondary indexes: which fields of which kinds are indexed, and their values.

A small declared set per kind, not arbitrary JSON paths: each field has one
decoder here, and the scripts (apply.lua, relist.lua) only see the values as one
string, ``VALUES_SEP``-joined in the declared order. The projector passes that
string with every apply; the script keeps it on the state hash (field
``INDEXED_FIELD``) and, when it changed, moves the member between the
``Keys.by(kind, field, value)`` sets and the ``Keys.counts(kind)`` counter, in the
same atomic call as the state.
"""

import enum
from typing import Any, Final

import msgspec


class Field(enum.StrEnum):
    """An indexed field, named as it appears in keys and on the command line."""

    PHASE = "phase"  # Job status.state.phase; PodGroup, Pod status.phase
    QUEUE = "queue"  # Job, PodGroup spec.queue


# What each kind indexes. The counter counts objects per combination of all of a
# kind's values (Jobs and PodGroups: per (phase, queue)); a set per non-empty value.
INDEXED: Final[dict[str, tuple[Field, ...]]] = {
    "job": (Field.PHASE, Field.QUEUE),
    "podgroup": (Field.PHASE, Field.QUEUE),
    "pod": (Field.PHASE,),
}
# Neither a phase nor a queue name (a Kubernetes object name) can hold a '/'.
VALUES_SEP: Final = "/"


class _Spec(msgspec.Struct):
    queue: Any = None


class _Status(msgspec.Struct):
    phase: Any = None
    state: Any = None


class _Indexed(msgspec.Struct):
    spec: _Spec | None = None
    status: _Status | None = None


_decode = msgspec.json.Decoder(_Indexed).decode


class Values(msgspec.Struct, frozen=True):
    """The indexable fields of one object ("" where it has none)."""

    phase: str = ""
    queue: str = ""


def values_of(raw: bytes) -> Values:
    """Phase and queue of a raw object, in one decode: ``phase`` as
    common.objects.phase_of says (Queue ``status.state`` included, for the change
    feed), ``queue`` from ``spec.queue``."""
    try:
        obj = _decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Values()
    status, spec = obj.status, obj.spec
    phase = ""
    if status is not None:
        if isinstance(status.phase, str):
            phase = status.phase
        elif isinstance(status.state, str):
            phase = status.state
        elif isinstance(status.state, dict) and isinstance(status.state.get("phase"), str):
            phase = status.state["phase"]
    queue = spec.queue if spec is not None and isinstance(spec.queue, str) else ""
    return Values(phase=phase, queue=queue)


def fields_arg(kind: str) -> str:
    """The kind's indexed field names as the scripts take them ("" = not indexed)."""
    return VALUES_SEP.join(INDEXED.get(kind, ()))


def indexed_arg(kind: str, values: Values) -> str:
    """The kind's indexed values, joined in declared order: the counter's field."""
    return VALUES_SEP.join(
        getattr(values, f).replace(VALUES_SEP, "") for f in INDEXED.get(kind, ())
    )


def split_indexed(kind: str, joined: str) -> dict[Field, str]:
    """A counter field (or stored indexed string) read back as field -> value."""
    return dict(zip(INDEXED.get(kind, ()), joined.split(VALUES_SEP), strict=False))
