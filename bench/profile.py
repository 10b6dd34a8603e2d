"""Where kube2redis spends its CPU under a burst: `python -m bench.profile`
(`make bench-profile`).

Runs the burst scenario for kube2redis with py-spy attached to the watcher and
the projector, keeps py-spy's collapsed stacks (flamegraph.pl or speedscope
read them) and writes bench/results/profiles/SUMMARY.md: per process, the
functions with the most samples of their own and the most samples beneath them.
"""

import argparse
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from bench import scenarios
from bench.harness import RESULTS, Cluster, fresh_scratch

PROFILES = RESULTS / "profiles"
OURS = ("(watcher/", "(projector/", "(common/")


class Ranking(NamedTuple):
    samples: int
    by_own: list[tuple[str, int]]  # functions by samples spent in their own code
    ours_inclusive: list[tuple[str, int]]  # our functions by samples beneath them


def rank(collapsed: Path, count: int = 12) -> Ranking:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack:
            continue
        n = int(weight)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    ours = [(f, n) for f, n in inclusive.most_common() if any(o in f for o in OURS)]
    return Ranking(samples, own.most_common(count), ours[:count])


def _table(rows: list[tuple[str, int]], samples: int, heading: str) -> list[str]:
    lines = [f"| {heading} | share of samples |", "|---|---:|"]
    return lines + [f"| `{frame}` | {n / samples:.1%} |" for frame, n in rows]


def summary_markdown(objects: int, figures: dict[str, float]) -> str:
    events = 3 * objects
    lines = [
        "# Profiles under a burst",
        "",
        f"Burst of {objects:,} Jobs created, updated and deleted ({events:,} events) through "
        f"kube2redis at {figures['events_per_s']:,.0f} events/s (the API server's pace). "
        "py-spy at 200 Hz, non-blocking, samples aggregated by function, only samples "
        "holding the GIL (running Python, not waiting on a socket or a queue). "
        "Collapsed stacks beside this file (flamegraph.pl or speedscope draw them).",
        "",
        "| process | CPU seconds | CPU per event |",
        "|---|---:|---:|",
    ]
    for role in ("watcher", "projector"):
        seconds = figures.get(f"cpu_s_{role}", float("nan"))
        lines.append(f"| {role} | {seconds:.2f} | {1e6 * seconds / events:.0f} us |")
    lines.append("")
    for role in ("watcher", "projector"):
        collapsed = PROFILES / f"{role}.collapsed"
        if not collapsed.exists():
            continue
        ranking = rank(collapsed)
        lines += [f"## {role}: {ranking.samples:,} samples", ""]
        lines += _table(ranking.by_own, ranking.samples, "where the time is spent (own code)")
        lines.append("")
        lines += _table(ranking.ours_inclusive, ranking.samples, "our functions, with callees")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=2000)
    args = parser.parse_args()
    fresh_scratch()
    cluster = Cluster()
    try:
        figures = scenarios.burst(cluster, "kube2redis", args.objects, profile_dir=PROFILES)
    finally:
        cluster.down()
    text = summary_markdown(args.objects, figures)
    (PROFILES / "SUMMARY.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
