"""Commands that read only Redis, in the manner of `kubectl get`, for operators
without API access: `kube2redis ls` and `kube2redis counts`. Built on the reader
library (kube2redis/client.py) and registered on the group in cli.py."""

import sys
from typing import TYPE_CHECKING

import click

from common.errors import Kube2RedisError
from common.indexes import INDEXED, Field, Values
from kube2redis.client import Mirror, Query, ShardedMirror, StoredObject

if TYPE_CHECKING:
    from kube2redis.options import Settings

NONE = "-"  # how an empty phase or queue is shown


def _mirror(ctx: click.Context) -> Mirror | ShardedMirror:
    settings: Settings = ctx.find_root().obj
    shards = settings.each_shard()
    if len(shards) == 1:
        return Mirror(shards[0][1], shards[0][2])
    return ShardedMirror(settings.shard_map, [Mirror(r, keys) for _, r, keys in shards])


def _row(obj: StoredObject, wide: bool) -> list[str]:
    values = obj.values
    row = [obj.namespace or NONE, obj.name, values.phase or NONE, values.queue or NONE]
    if wide:
        meta: dict[str, object] = obj.decode().get("metadata", {})
        row += [obj.rv, obj.uid, str(meta.get("creationTimestamp", NONE))]
    return row


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


@click.command(name="ls")
@click.argument("kind")
@click.option("-n", "--namespace", default=None, help="Only this namespace.")
@click.option("--phase", default=None, help="Only objects in this phase (an index).")
@click.option("--queue", default=None, help="Only objects of this Volcano queue (an index).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "wide", "json", "name"]),
    default="table",
    show_default=True,
)
@click.pass_context
def ls(
    ctx: click.Context,
    kind: str,
    namespace: str | None,
    phase: str | None,
    queue: str | None,
    output: str,
) -> None:
    """List stored objects of KIND (job, podgroup, pod, queue), from Redis alone."""
    query = Query(kind.lower(), namespace=namespace, phase=phase, queue=queue)
    try:
        objects = _mirror(ctx).objects(query)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if output == "json":
        out = sys.stdout.buffer
        # A kubectl-style List whose items are the stored bytes, never re-encoded.
        out.write(b'{"apiVersion":"v1","kind":"List","items":[')
        out.write(b",".join(o.raw for o in objects))
        out.write(b"]}\n")
        return
    if output == "name":
        for o in objects:
            click.echo(f"{query.kind}/{o.member.replace(':', '/', 1) if o.namespace else o.name}")
        return
    if not objects:
        click.echo(f"no {query.kind} in Redis matches", err=True)
        return
    header = ["NAMESPACE", "NAME", "PHASE", "QUEUE"]
    if output == "wide":
        header += ["RESOURCEVERSION", "UID", "CREATED"]
    click.echo(_table(header, [_row(o, output == "wide") for o in objects]))


@click.command()
@click.argument("kind", default="job")
@click.pass_context
def counts(ctx: click.Context, kind: str) -> None:
    """How many objects of KIND per phase (rows) and queue (columns): one HGETALL."""
    kind = kind.lower()
    if Field.PHASE not in INDEXED.get(kind, ()):
        raise Kube2RedisError(f"{kind} has no counters (counted: {', '.join(INDEXED)})")
    held = _mirror(ctx).counts(kind)
    if not held:
        click.echo(f"no {kind} in Redis", err=True)
        return
    click.echo(_table(*count_table(held, Field.QUEUE in INDEXED[kind])))


def count_table(held: dict[Values, int], by_queue: bool) -> tuple[list[str], list[list[str]]]:
    """The counters as a phase x queue table with totals (one TOTAL column if the
    kind has no queue)."""
    phases = sorted({v.phase for v in held})
    queues = sorted({v.queue for v in held}) if by_queue else []
    header = ["PHASE", *(q or NONE for q in queues), "TOTAL"]
    rows = []
    for phase in phases:
        cells = [held.get(Values(phase, q), 0) for q in queues]
        total = sum(n for v, n in held.items() if v.phase == phase)
        rows.append([phase or NONE, *map(str, cells), str(total)])
    column_totals = [sum(n for v, n in held.items() if v.queue == q) for q in queues]
    rows.append(["TOTAL", *map(str, column_totals), str(sum(held.values()))])
    return header, rows
