"""Run the benchmarks: `python -m bench.run --quick` (about 9 minutes) or `--full`;
`--only restart scale` runs just those scenarios (the others' results stay as they are).

Writes bench/results/<scenario>.json, bench/RESULTS.md and PNG plots; a quick run
writes them under bench/results/quick/, so it never replaces the full run's figures
that the README quotes.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import msgspec

from bench import memory, relist, report, scenarios
from bench import shards as shard_bench
from bench.harness import (
    QUICK_RESULTS,
    RESULTS,
    Cluster,
    build_informer_go,
    fresh_scratch,
    machine,
    summary,
)


class Sizes(msgspec.Struct, frozen=True):
    """How much each scenario does; the results files record it."""

    runs: int  # runs of every scenario but latency (the median is reported)
    burst: int  # jobs created, updated and deleted
    latency_rates: tuple[int, ...]  # changes/s offered
    latency_s: float  # seconds at each rate
    latency_runs: int
    replay: tuple[int, int]  # (stream entries, distinct objects)
    spool_batches: int  # batches of 100 events per fsync policy
    outage: int  # changes while Redis is down
    scale: int  # objects in scope
    restart: int  # objects mirrored when Redis restarts empty
    restart_runs: int
    reads: int  # Jobs in the mirror the reads scenario asks questions of
    reads_reps: int  # answers per question, source and run
    relist: tuple[int, int]  # (objects in one scope, of them vanished before the relist)
    shards_replay: tuple[int, int]  # (stream entries over every shard, distinct objects)
    shards_burst: int  # jobs created, updated and deleted per sharded burst
    shards_burst_counts: tuple[int, ...]  # shard counts the burst runs with
    shards_runs: int
    shards_replay_counts: tuple[int, ...]  # shard counts the replay runs with
    shards_targets: tuple[str, ...]  # of bench.shards.TARGETS
    memory: tuple[int, ...]  # objects stored per memory measurement


SCENARIOS = (
    "burst",
    "latency",
    "replay",
    "outage",
    "scale",
    "restart",
    "reads",
    "shards",
    "memory",
    "relist",
)
QUICK = Sizes(
    runs=2,
    burst=500,
    latency_rates=(200, 1000),
    latency_s=10,
    latency_runs=1,
    replay=(100_000, 5_000),
    spool_batches=200,
    outage=2_000,
    scale=5_000,
    restart=1_000,
    restart_runs=1,
    reads=1_000,
    reads_reps=10,
    relist=(10_000, 30),
    shards_replay=(20_000, 2_000),
    shards_burst=50,
    shards_burst_counts=(2,),
    shards_runs=1,
    shards_replay_counts=(1, 2),
    shards_targets=("redis", "cluster-spread"),
    memory=(2_000,),
)
FULL = Sizes(
    runs=3,
    burst=5_000,
    latency_rates=(200, 1000),
    latency_s=60,
    latency_runs=3,
    replay=(1_000_000, 50_000),
    spool_batches=2_000,
    outage=20_000,
    scale=100_000,
    restart=10_000,
    restart_runs=3,
    # 100,000 Jobs would take the API server about 12 minutes to create and phase
    # on this 2-core machine, per run of the suite: measured at 10,000 (README).
    reads=10_000,
    reads_reps=20,
    relist=(100_000, 300),
    shards_replay=(200_000, 20_000),
    shards_burst=1_000,
    shards_burst_counts=(1, 2, 4),
    shards_runs=3,
    shards_replay_counts=(1, 2, 4),
    shards_targets=("redis", "cluster", "cluster-spread"),
    memory=(10_000, 100_000),
)


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: summary([float(run[k]) for run in runs]) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, choices=SCENARIOS, metavar="SCENARIO")
    parser.add_argument(
        "--reads-objects",
        type=int,
        default=None,
        help="Jobs for the reads scenario instead of the mode's (its results go to "
        "reads-N.json); --runs sets how many runs",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs instead of the mode's")
    args = parser.parse_args()
    size = FULL if args.full else QUICK
    if args.runs:
        size = msgspec.structs.replace(size, runs=args.runs)
    if args.reads_objects:
        size = msgspec.structs.replace(size, reads=args.reads_objects)
    mode = "full" if args.full else "quick"
    wanted = set(args.only or SCENARIOS)
    fresh_scratch()
    results = RESULTS if args.full else QUICK_RESULTS
    results.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    if wanted & {"burst", "latency"}:  # the only scenarios the peers run in
        build_informer_go()
    info = {"machine": machine(), "mode": mode, "sizes": msgspec.structs.asdict(size)}
    if "relist" in wanted:  # no API server: seeded through the projector's apply path
        objects, deleted = size.relist
        figures = _summarise(relist.relist(objects, deleted, size.runs))
        print("relist: " + ", ".join(f"{k} {v['median']:,.2f}" for k, v in figures.items()))
        _write(results, "relist", {**info, "objects": objects, "figures": figures})
        wanted.discard("relist")
    if not wanted:  # nothing left that needs the API server
        markdown = report.write_all(results)
        print(f"bench {mode}: done in {time.monotonic() - began:.0f}s; see {markdown}")
        return
    cluster = Cluster()
    try:
        if "burst" in wanted:
            figures = {}
            for system in scenarios.SYSTEMS:
                runs = [scenarios.burst(cluster, system, size.burst) for _ in range(size.runs)]
                figures[system] = _summarise(runs)
                print(f"burst {system}: {figures[system]['events_per_s']['median']:,.0f} events/s")
            _write(results, "burst", {**info, "objects": size.burst, "figures": figures})
        if "latency" in wanted:
            by_label: dict[str, list[dict[str, Any]]] = {}
            samples: dict[str, list[float]] = {}
            # Systems interleaved run by run, so a slow spell of the box hits all of them.
            for _ in range(size.latency_runs):
                for rate in size.latency_rates:
                    for system in scenarios.SYSTEMS:
                        result = scenarios.latency(cluster, system, rate, size.latency_s)
                        label = f"{system}@{rate}"
                        samples.setdefault(label, []).extend(result.pop("samples_ms"))
                        by_label.setdefault(label, []).append(result)
                        print(
                            f"latency {label}/s: p50 {result['p50_ms']:.1f} ms, "
                            f"p99 {result['p99_ms']:.1f} ms "
                            f"(achieved {result['achieved_rate']:.0f}/s)"
                        )
            figures = {label: _summarise(runs) for label, runs in by_label.items()}
            _write(
                results,
                "latency",
                {**info, "figures": figures, "quantiles_ms": _quantiles(samples)},
            )
        if "replay" in wanted:
            entries, objects = size.replay
            runs = [scenarios.replay(entries, objects) for _ in range(size.runs)]
            figures = _summarise(runs)
            print("replay: " + ", ".join(f"{k} {v['median']:,.0f}" for k, v in figures.items()))
            _write(
                results,
                "replay",
                {**info, "entries": entries, "objects": objects, "figures": figures},
            )
        if "outage" in wanted:
            spool = _summarise(
                [scenarios.spool_rates(size.spool_batches) for _ in range(size.runs)]
            )
            drain = _summarise([scenarios.outage(cluster, size.outage) for _ in range(size.runs)])
            print(
                "outage: "
                + ", ".join(f"{k} {v['median']:,.1f}" for k, v in {**spool, **drain}.items())
            )
            _write(
                results, "outage", {**info, "changes": size.outage, "figures": {**spool, **drain}}
            )
        if "scale" in wanted:
            figures = _summarise(scenarios.scale(cluster, size.scale, size.runs))
            print("scale: " + ", ".join(f"{k} {v['median']:,.1f}" for k, v in figures.items()))
            _write(results, "scale", {**info, "figures": figures})
        if "restart" in wanted:
            figures = _summarise(scenarios.restart(cluster, size.restart, size.restart_runs))
            print("restart: " + ", ".join(f"{k} {v['median']:,.2f}" for k, v in figures.items()))
            _write(results, "restart", {**info, "objects": size.restart, "figures": figures})
        if "reads" in wanted:
            figures = _summarise(scenarios.reads(cluster, size.reads, size.runs, size.reads_reps))
            print("reads: " + ", ".join(f"{k} {v['median']:,.2f}" for k, v in figures.items()))
            name = f"reads-{size.reads}" if args.reads_objects else "reads"
            _write(results, name, {**info, "objects": size.reads, "figures": figures})
        if "shards" in wanted:
            runs_of_shards = args.runs or size.shards_runs
            measured = shard_bench.run(
                cluster,
                size.shards_replay,
                size.shards_burst,
                size.shards_burst_counts,
                runs_of_shards,
                size.shards_replay_counts,
                size.shards_targets,
            )
            _write(results, "shards", {**info, **measured})
        if "memory" in wanted:
            _write(results, "memory", {**info, **memory.run(cluster, size.memory)})
    finally:
        cluster.down()
    markdown = report.write_all(results)
    print(f"bench {mode}: done in {time.monotonic() - began:.0f}s; see {markdown}")


def _quantiles(samples: dict[str, list[float]]) -> dict[str, list[float]]:
    """Every 0.1 % quantile of each system's pooled samples: the CDF plot needs no
    more, and the file stays small however long the runs."""
    out = {}
    for label, values in samples.items():
        ordered = sorted(values)
        if ordered:
            last = len(ordered) - 1
            out[label] = [
                round(ordered[min(last, i * len(ordered) // 1000)], 2) for i in range(1001)
            ]
    return out


def _write(results: Path, name: str, data: dict[str, Any]) -> None:
    (results / f"{name}.json").write_text(json.dumps(data, indent=1, default=float))


if __name__ == "__main__":
    main()
