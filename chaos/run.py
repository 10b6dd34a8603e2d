"""`python -m chaos`: one seeded chaos run, its checks and its results file."""

import json
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec

from chaos import checker, faults
from chaos.load import Load
from chaos.world import RESOURCES, World
from common.kube import KubeClient, load_configuration
from common.resources import parse
from projector.verify import verify_resource

ROOT = Path(__file__).resolve().parent
CONVERGE_POLL_S = 0.5


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def converge(world: World, kube: KubeClient, timeout_s: float) -> float | None:
    """Seconds until Redis matches the cluster (verify clean); None if it never did."""
    resources = [kube.discover(parse(name)) for name in RESOURCES]
    began = time.monotonic()
    r = world.client()
    while time.monotonic() - began < timeout_s:
        world.check_processes()  # the supervisor's part: start again what exited
        try:
            if not any(verify_resource(kube, r, checker.KEYS, res, []) for res in resources):
                return time.monotonic() - began
        except Exception:
            pass
        time.sleep(CONVERGE_POLL_S)
    return None


def _run(
    world: World,
    seed: int,
    schedule: list[faults.Planned],
    duration: float,
    rate: float,
    converge_timeout: float,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], list[checker.Violation]]:
    """Start the world, play rounds until duration has passed (at least one, at
    most those planned), check; the summary and the violations."""
    began_wall = time.time()
    world.start()
    kube = KubeClient(load_configuration(world.cluster.kubeconfig, None))
    pids = {"watcher": world.watcher.pid if world.watcher else 0}
    rss_start = {"watcher": rss_mb(pids["watcher"])}
    rss_start.update({f"projector-{i}": rss_mb(p.pid) for i, p in enumerate(world.projectors)})
    began = time.monotonic()
    load = Load(world.kube, random.Random(seed), rate, began)
    load.start()
    converged: list[float | None] = []
    played: list[faults.Planned] = []
    try:
        for number in range(1 + max(p.round for p in schedule)):
            if number and time.monotonic() - began >= duration:
                break
            faults.ROUND_START(world)
            round_began = time.monotonic()
            planned = [p for p in schedule if p.round == number]
            healed = faults.play_round(world, planned, round_began, say)
            world.heal_all()
            load.pause()
            checking = time.monotonic()
            took = converge(world, kube, converge_timeout)
            # From the last heal, not from the check: healing everything takes a moment.
            took = None if took is None else checking + took - healed
            converged.append(took)
            say(
                f"round {number}: healed; "
                + (f"verify clean after {took:.1f}s" if took is not None else "NEVER converged")
            )
            world.check_processes()
            played.extend(planned)
            load.resume()
    finally:
        load.stop()
    # Deleted namespaces empty out in the namespace controller's own time: wait for
    # the cluster itself to be still before comparing with it.
    still = quiesce(kube, converge_timeout)
    # A killed projector's entries wait out the reclaim idle time before another
    # applies them: the checks come after every entry is applied, not before.
    drained = settled(world, converge_timeout)
    final = converge(world, kube, converge_timeout)
    world.check_processes()
    r = world.client()
    histories = checker.Histories(r)
    resources = [kube.discover(parse(name)) for name in RESOURCES]
    violations = [
        *(
            checker.check_final_state(kube, r, resources, histories)
            if still
            else [checker.Violation("convergence", "cluster", "namespaces still terminating")]
        ),
        *checker.check_feed(histories),
        *checker.check_coverage(load.writes, histories),
    ]
    for number, took in enumerate(converged):
        if took is None:
            violations.append(
                checker.Violation(
                    "convergence", f"round {number}", f"not clean within {converge_timeout:.0f}s"
                )
            )
    if final is None or not drained:
        violations.append(
            checker.Violation(
                "convergence",
                "the end of the run",
                "entries still pending or unread" if not drained else "verify never clean",
            )
        )
    for name, code, tail in world.exited:
        violations.append(
            checker.Violation("process-exit", name, f"exit {code}", tail.splitlines())
        )
    rss_end = {"watcher": rss_mb(world.watcher.pid if world.watcher else 0)}
    rss_end.update({f"projector-{i}": rss_mb(p.pid) for i, p in enumerate(world.projectors)})
    memory = r.info("memory")
    summary: dict[str, Any] = {
        "seed": seed,
        "started": began_wall,
        "duration_s": round(time.monotonic() - began, 1),
        "rounds": len(converged),
        "faults_by_kind": dict(Counter(p.fault for p in played)),
        "writes": len(load.writes),
        "writes_refused_by_the_api": load.failed,
        "watcher_restarts_api_unreachable_at_start": world.restarts_api_unreachable,
        "stream_entries": histories.stream_entries,
        "converge_s": [None if t is None else round(t, 2) for t in converged],
        "longest_converge_s": max((t for t in converged if t is not None), default=None),
        "final_converge_s": final,
        "rss_mb": {k: [round(rss_start.get(k, 0.0), 1), round(v, 1)] for k, v in rss_end.items()},
        "redis_used_memory_mb": round(int(memory["used_memory"]) / 2**20, 1),
        "redis_peak_memory_mb": round(int(memory["used_memory_peak"]) / 2**20, 1),
        "violations": [msgspec.to_builtins(v) for v in violations],
        "schedule": [msgspec.to_builtins(p) for p in played],
    }
    return summary, violations


def quiesce(kube: KubeClient, timeout_s: float) -> bool:
    """Wait (bounded) until no namespace is terminating; False if one still is."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        listing = json.loads(kube.get("/api/v1/namespaces"))
        if not any(ns["status"].get("phase") == "Terminating" for ns in listing["items"]):
            return True
        time.sleep(CONVERGE_POLL_S)
    return False


def settled(world: World, timeout_s: float) -> bool:
    """Wait (bounded) until the group has nothing pending and nothing unread."""
    began = time.monotonic()
    r = world.client()
    while time.monotonic() - began < timeout_s:
        try:
            last = r.xinfo_stream(checker.KEYS.stream)["last-generated-id"]
            groups = r.xinfo_groups(checker.KEYS.stream)
            # Not XINFO's "lag": Redis 7.0 miscounts it once a group was created on a
            # stream with entries in it; the last id delivered says it exactly.
            if all(g["pending"] == 0 and g["last-delivered-id"] == last for g in groups):
                return True
        except Exception:
            pass
        time.sleep(CONVERGE_POLL_S)
    return False


@click.command()
@click.option("--seed", type=int, default=None, help="The run's seed (default: a random one).")
@click.option("--duration", type=float, default=180.0, show_default=True, help="Seconds of faults.")
@click.option(
    "--faults",
    "fault_names",
    default="all",
    show_default=True,
    help=f"Comma-separated, of: {', '.join(faults.FAULTS)}.",
)
@click.option("--projectors", type=int, default=2, show_default=True)
@click.option("--rate", type=float, default=8.0, show_default=True, help="Writes per second.")
@click.option("--converge-timeout", type=float, default=120.0, show_default=True)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Logs and state (default: chaos/scratch/seed-N).",
)
@click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / "results",
    show_default=True,
)
@click.option(
    "--break-cas",
    is_flag=True,
    help="Run projectors with apply.lua's resourceVersion compare disabled, to show "
    "that the checker catches a broken projector.",
)
def main(
    seed: int | None,
    duration: float,
    fault_names: str,
    projectors: int,
    rate: float,
    converge_timeout: float,
    workdir: Path | None,
    results: Path,
    break_cas: bool,
) -> None:
    """Throw seeded faults at watcher, projectors, Redis and the API server under
    load; check the histories; exit 1 on any violation."""
    seed = random.SystemRandom().randrange(1, 10**6) if seed is None else seed
    names = list(faults.FAULTS) if fault_names == "all" else fault_names.split(",")
    unknown = [n for n in names if n not in faults.FAULTS]
    if unknown:
        raise click.BadParameter(f"unknown: {', '.join(unknown)}", param_hint="--faults")
    # Rounds end at their last heal, often well before ROUND_S: plan more than can
    # be played, and let the duration end the run.
    rounds = max(1, math.ceil(duration / faults.MIN_ROUND_S))
    schedule = faults.plan(seed, rounds, names)

    def say(line: str) -> None:
        click.echo(f"chaos: {line}", err=True)

    say(
        f"seed {seed}, up to {rounds} rounds of up to {faults.ROUND_S:.0f}s in {duration:.0f}s, "
        f"{projectors} projectors"
    )
    for p in schedule:
        say(f"plan round {p.round} +{p.at:5.1f}s {p.fault} for {p.hold}s")
    workdir = workdir or ROOT / "scratch" / f"seed-{seed}"
    world = World(workdir, projectors, break_cas)
    # A SIGTERM (or a SIGINT a background shell ignores) still stops every process
    # the run started, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        summary, violations = _run(world, seed, schedule, duration, rate, converge_timeout, say)
        summary.update(projectors=projectors, break_cas=break_cas)
    finally:
        world.stop()
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(summary["started"]))
    out = results / f"{stamp}-seed{seed}{'-broken' if break_cas else ''}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    say(
        f"{summary['writes']} writes, {summary['stream_entries']} stream entries, "
        f"{sum(summary['faults_by_kind'].values())} faults, longest convergence "
        f"{summary['longest_converge_s']}s; results in {out}"
    )
    for v in violations[:20]:
        say(f"VIOLATION {v.check} {v.subject}: {v.detail}")
        for line in v.history[-12:]:
            say(f"    {line}")
    say(f"{len(violations)} violations (seed {seed})")
    sys.exit(1 if violations else 0)
