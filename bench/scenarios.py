"""The six scenarios. Each returns a dict of figures; run.py repeats and records."""

import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import msgspec
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import (
    PAYLOAD,
    SCRATCH,
    ChangeClock,
    Cluster,
    Load,
    Redis,
    System,
    cpu_seconds,
    cpu_used,
    job,
    profiling,
    rss_mb,
    running,
)
from common import events as ev
from common.indexes import Values, values_of
from common.keys import Keys
from common.kube import KubeClient
from common.objects import decode_head, decode_list_page
from common.resp import Batch
from kube2redis.client import Mirror, Query
from projector.scripts import Ack, ApplySettings, Mode, Scripts
from tests.support.kube import JOBS
from watcher.append import xadd_args
from watcher.reflector import PAGE_SIZE
from watcher.spool import FsyncPolicy, Spool
from watcher.writer import SpoolBatch

SYSTEMS = ("kube2redis", "informer-go", "kopf")
KEYS = Keys()


def burst(
    cluster: Cluster, system: str, objects: int, profile_dir: Path | None = None
) -> dict[str, float]:
    """Create, update and delete `objects` Jobs with 8 parallel clients (profiled
    with py-spy into profile_dir when given)."""
    ns = cluster.namespace("burst")
    r = Redis("burst")
    load = Load(cluster, ns)
    try:
        with (
            running(system, cluster, ns, r, load) as under_test,
            cpu_used(under_test) as cpu,
            profiling(under_test, profile_dir),
        ):
            clock = ChangeClock(r.client(), f"k8s:job:{ns}:")
            names = [f"b-{i}" for i in range(objects)]
            started = time.time()
            load.all(load.create, names)
            load.all(lambda n: load.update(n, "1"), names)
            load.all(load.delete, names)
            last_write = time.time()
            complete = clock.wait_deleted(objects + 1, timeout_s=600)  # +1: the probe
            clock.stop()
            done = clock.last_delete_at
        events = 3 * objects
        return {
            "events_per_s": events / (done - started) if complete else 0.0,
            "lag_after_last_write_s": done - last_write if complete else float("nan"),
            "api_writes_per_s": events / (last_write - started),
            # The burst is bound by the API server: CPU per event says what each
            # system would cost at any rate.
            "cpu_ms_per_1000_events": 1e6 * sum(cpu.values()) / events,
            **{f"cpu_s_{role}": seconds for role, seconds in cpu.items()},
            "complete": float(complete),
        }
    finally:
        r.stop()
        cluster.delete_namespace(ns)


def latency(cluster: Cluster, system: str, rate: int, seconds: float) -> dict[str, Any]:
    """Steady updates at `rate`/s: API write acknowledged -> change visible in Redis."""
    ns = cluster.namespace("latency")
    r = Redis("latency")
    load = Load(cluster, ns, threads=16)
    try:
        with running(system, cluster, ns, r, load):
            names = [f"l-{i}" for i in range(200)]
            load.all(load.create, names)
            clock = ChangeClock(r.client(), f"k8s:job:{ns}:")
            load.acked.clear()
            started = time.monotonic()
            sent = 0
            futures = []
            while (elapsed := time.monotonic() - started) < seconds:
                due = int(elapsed * rate)
                while sent < due:
                    futures.append(
                        load.pool.submit(load.update, names[sent % len(names)], str(sent))
                    )
                    sent += 1
                time.sleep(0.001)
            for f in futures:
                f.result()
            achieved = sent / (time.monotonic() - started)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(k in clock.seen for k in load.acked):
                time.sleep(0.05)
            clock.stop()
            latencies = sorted(
                (clock.seen[k] - t) * 1000 for k, t in load.acked.items() if k in clock.seen
            )
            missing = len(load.acked) - len(latencies)

            stages = _stages(r.client(), ns, load.acked, clock) if system == "kube2redis" else {}
            return {
                "target_rate": rate,
                "achieved_rate": achieved,
                "p50_ms": _pct(latencies, 50),
                "p95_ms": _pct(latencies, 95),
                "p99_ms": _pct(latencies, 99),
                "max_ms": latencies[-1],
                "missing": missing,
                **stages,
                "samples_ms": latencies,
            }
    finally:
        r.stop()
        cluster.delete_namespace(ns)


def _pct(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def _stages(
    r: "redis.Redis", ns: str, acked: dict[tuple[str, str], float], clock: ChangeClock
) -> dict[str, float]:
    """Where kube2redis's latency goes, change by change: API ack -> watcher received
    (received_ns) -> entry appended (its stream id) -> applied (its change feed id) ->
    seen by the clock. Clocks: the watcher's and this process's wall clock, Redis's
    ms clock; one host, so they agree to well under a millisecond."""
    appended: dict[tuple[str, str], tuple[float, int]] = {}
    cursor = "-"
    while rows := cast(list[ev.Entry], r.xrange(KEYS.stream, min=cursor, count=5000)):
        for entry_id, f in rows:
            if f.get(b"namespace") == ns.encode() and b"name" in f:
                change = (f[b"name"].decode(), f[b"rv"].decode())
                appended[change] = (int(f[b"received_ns"]) / 1e9, int(entry_id.split(b"-")[0]))
        cursor = "(" + rows[-1][0].decode()
    spans: dict[str, list[float]] = {"watch": [], "append": [], "apply": [], "notice": []}
    for change, acked_at in acked.items():
        if change not in appended or change not in clock.applied_ms:
            continue
        received, appended_ms = appended[change]
        applied_ms = clock.applied_ms[change]
        spans["watch"].append((received - acked_at) * 1000)
        spans["append"].append(appended_ms - received * 1000)
        spans["apply"].append(applied_ms - appended_ms)
        spans["notice"].append(clock.seen[change] * 1000 - applied_ms)
    figures = {}
    for stage, values in spans.items():
        values.sort()
        figures[f"{stage}_p50_ms"] = _pct(values, 50)
        figures[f"{stage}_p99_ms"] = _pct(values, 99)
    return figures


def _synthetic_stream(r: "redis.Redis", entries: int, objects: int) -> None:
    pipe = r.pipeline(transaction=False)
    body = PAYLOAD[:900]
    for i in range(entries):
        name = f"o-{i % objects}"
        kind = ev.ADDED if i < objects else ev.MODIFIED
        obj = (
            f'{{"kind":"Job","metadata":{{"name":"{name}","namespace":"bench",'
            f'"resourceVersion":"{i + 1000}"}},"spec":{{"x":"{body}"}}}}'
        ).encode()
        pipe.xadd(
            KEYS.stream,
            ev.to_fields(
                ev.StreamEvent(  # type: ignore[arg-type]
                    type=kind,
                    resource="jobs.batch.volcano.sh",
                    kind="job",
                    namespace="bench",
                    name=name,
                    uid=f"u-{i % objects}",
                    rv=str(i + 1000),
                    object=obj,
                    received_ns=time.time_ns(),
                )
            ),
        )
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def replay(entries: int, objects: int) -> dict[str, float]:
    """`kube2redis replay --rebuild` with 1 and 2 processes against the ceilings."""
    r = Redis("replay")
    client = r.client()
    try:
        _synthetic_stream(client, entries, objects)
        figures: dict[str, float] = {}
        for processes in (1, 2):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "kube2redis",
                    "--redis-url",
                    r.url,
                    "replay",
                    "--from",
                    "0",
                    "--rebuild",
                    "--processes",
                    str(processes),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rate = re.search(r"\(([\d,]+) events/s\)", out.stdout)
            assert rate, out.stdout + out.stderr
            figures[f"replay_{processes}p_events_per_s"] = float(rate.group(1).replace(",", ""))
        # Ceilings: the same apply calls and the same XADDs pipelined 1,000 at a time
        # from one Python process, packed with the same code as kube2redis but with no
        # stream to read and nothing to decode. Then the same batches packed before
        # the clock starts: what is left is Redis's own work and reading replies.
        client.flushdb()
        scripts = Scripts(KEYS, ApplySettings())
        scripts.load(client)
        events = [
            ev.StreamEvent(
                type=ev.MODIFIED,
                resource="jobs.batch.volcano.sh",
                kind="job",
                namespace="bench",
                name=f"o-{i % objects}",
                uid="u",
                rv=str(i + 1000),
                object=b'{"x":"' + PAYLOAD[:900].encode() + b'"}',
                received_ns=0,
            )
            for i in range(min(entries, 200_000))
        ]
        chunks = [events[i : i + 1000] for i in range(0, len(events), 1000)]

        def applies(chunk: list[ev.StreamEvent]) -> Batch:
            batch = Batch()
            for e in chunk:
                scripts.apply(batch, e, Ack(Mode.REPLAY, "", "0-0"))
            return batch

        def appends(chunk: list[ev.StreamEvent]) -> Batch:
            batch = Batch()
            for e in chunk:
                batch.add(*xadd_args(b"ceiling", e))
            return batch

        for name, pack in (("evalsha", applies), ("xadd", appends)):
            client.flushdb()
            scripts.load(client)
            began = time.perf_counter()
            for chunk in chunks:
                pack(chunk).send(client)
            figures[f"{name}_ceiling_per_s"] = len(events) / (time.perf_counter() - began)
            client.flushdb()
            scripts.load(client)
            packed = [pack(chunk) for chunk in chunks]
            began = time.perf_counter()
            for batch in packed:
                batch.send(client)
            figures[f"{name}_prepacked_per_s"] = len(events) / (time.perf_counter() - began)
        bench = subprocess.run(
            [
                "redis-benchmark",
                "-p",
                str(r.port),
                "-n",
                "200000",
                "-P",
                "64",
                "-q",
                "XADD",
                "rb",
                "*",
                "f",
                PAYLOAD[:900],
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        found = re.findall(r"([\d.]+) requests per second", bench.stdout.replace("\r", "\n"))
        figures["redis_benchmark_xadd_per_s"] = float(found[-1]) if found else 0.0
        return figures
    finally:
        r.stop()


def spool_rates(batches: int) -> dict[str, float]:
    """Spool write rate per fsync policy: batches of 100 events of about 3.5 KB."""
    event = ev.StreamEvent(
        type=ev.MODIFIED,
        resource="jobs.batch.volcano.sh",
        kind="job",
        namespace="bench",
        name="x",
        uid="u",
        rv="1",
        object=job("x", "bench"),
        received_ns=0,
    )
    payload = msgspec.msgpack.encode(SpoolBatch([event] * 100, {"s": "1"}))
    figures = {}
    policies: tuple[FsyncPolicy, ...] = ("always", "interval", "never")
    for policy in policies:
        directory = SCRATCH / f"spool-bench-{policy}"
        subprocess.run(["rm", "-rf", str(directory)], check=True)
        spool = Spool(directory, max_bytes=1 << 34, fsync=policy)
        began = time.perf_counter()
        for _ in range(batches):
            spool.append(payload)
        spool.close()
        figures[f"spool_{policy}_events_per_s"] = 100 * batches / (time.perf_counter() - began)
        subprocess.run(["rm", "-rf", str(directory)], check=True)
    return figures


def outage(cluster: Cluster, changes: int) -> dict[str, float]:
    """Redis down while `changes` happen; drain rate and time to consistent after."""
    ns = cluster.namespace("outage")
    r = Redis("outage")
    load = Load(cluster, ns)
    try:
        with running("kube2redis", cluster, ns, r, load) as system:
            r.kill()
            creates = changes // 2
            names = [f"o-{i}" for i in range(creates)]
            load.all(load.create, names)
            load.all(lambda n: load.update(n, "1"), names[: changes - creates])
            time.sleep(1.0)  # let the watcher spool the tail
            spooled = _watcher_metric(system, "kube2redis_watcher_spool_bytes")
            r.start()
            restarted = time.monotonic()
            # Scraping /metrics costs the watcher CPU: poll it gently; the drain's own
            # duration and size come from the watcher's gauges.
            while _watcher_metric(system, "kube2redis_watcher_last_drain_events") == 0:
                if time.monotonic() - restarted > 300:
                    raise RuntimeError("the spool never drained")
                time.sleep(0.1)
            drained_entries = _watcher_metric(system, "kube2redis_watcher_last_drain_events")
            drained = _watcher_metric(system, "kube2redis_watcher_last_drain_seconds")
            consistent = float("nan")
            while time.monotonic() - restarted < 300:
                if _verify_clean(cluster, r, ns):
                    consistent = time.monotonic() - restarted
                    break
                time.sleep(0.2)
            return {
                "drain_events_per_s": drained_entries / drained,
                "drained_entries": drained_entries,
                "drain_s": drained,
                "spooled_bytes": spooled,
                "consistent_s": consistent,
            }
    finally:
        r.stop()
        cluster.delete_namespace(ns)


def _verify_clean(cluster: Cluster, r: Redis, ns: str) -> bool:
    """`kube2redis verify` of the namespace's Jobs, once (no retries): exit 0?"""
    verify = [
        sys.executable,
        "-m",
        "kube2redis",
        "--redis-url",
        r.url,
        "verify",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--namespace",
        ns,
        "--resource",
        "jobs.batch.volcano.sh",
        "--retries",
        "0",
    ]
    return subprocess.run(verify, capture_output=True, check=False).returncode == 0


def _watcher_metric(system: System, name: str) -> float:
    body = urllib.request.urlopen(
        f"http://127.0.0.1:{system.watcher_port}/metrics", timeout=5
    ).read()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith(name)
    )


def scale(cluster: Cluster, objects: int, runs: int) -> list[dict[str, float]]:
    """`objects` Jobs in scope, created once: relist time and RSS of each process,
    against kubectl, measured `runs` times, each into a fresh Redis."""
    ns = cluster.namespace("scale")
    load = Load(cluster, ns, threads=8)
    try:
        load.all(load.create, [f"s-{i}" for i in range(objects)])
        return [_relist_once(cluster, ns, objects) for _ in range(runs)]
    finally:
        cluster.delete_namespace(ns)


def _relist_once(cluster: Cluster, ns: str, objects: int) -> dict[str, float]:
    kubectl = [
        str(cluster.local.bin_dir / "kubectl"),
        f"--kubeconfig={cluster.kubeconfig}",
        "get",
        "jobs.batch.volcano.sh",
        "-n",
        ns,
        "-o",
        "json",
    ]
    began = time.perf_counter()
    subprocess.run(kubectl, capture_output=True, check=True)
    kubectl_s = time.perf_counter() - began
    r = Redis("scale")
    try:
        client = r.client()
        # Every command over 1 ms is logged: the longest is how long the relist kept
        # every other client (dashboards included) waiting at once.
        client.config_set("slowlog-log-slower-than", 1000)
        client.config_set("slowlog-max-len", 10_000)
        client.slowlog_reset()
        began = time.perf_counter()
        system = System("kube2redis", cluster, ns, r.url)
        try:
            deadline = time.monotonic() + 600
            # Mirrored once the relist's RELIST_END is applied: every object is in.
            while not client.exists(KEYS.relist("job", ns)) and time.monotonic() < deadline:
                time.sleep(0.05)
            mirrored_s = time.perf_counter() - began
            assert client.scard(KEYS.index("job")) == objects, "relist incomplete after 600 s"
            time.sleep(2)
            watcher_rss, projector_rss = (rss_mb(p.pid) for p in system.procs)
        finally:
            system.stop()
        slowest = max(
            (entry for entry in client.slowlog_get(10_000) if b"EVALSHA" in entry["command"]),
            key=lambda entry: int(entry["duration"]),
            default=None,
        )
        return {
            "objects": objects,
            "relist_to_redis_s": mirrored_s,
            "kubectl_get_json_s": kubectl_s,
            "watcher_rss_mb": watcher_rss,
            "projector_rss_mb": projector_rss,
            "longest_script_call_ms": int(slowest["duration"]) / 1000 if slowest else 0.0,
        }
    finally:
        r.stop()


def restart(cluster: Cluster, objects: int, runs: int) -> list[dict[str, float]]:
    """`objects` Jobs mirrored, then Redis killed (SIGKILL) and started empty on the
    same port: how long until every object is back with its live resourceVersion, and
    what that cost the API server. The Jobs are created once; each of `runs` runs
    mirrors them into a fresh Redis first (the watcher's initial relist)."""
    ns = cluster.namespace("restart")
    load = Load(cluster, ns, threads=8)
    try:
        load.all(load.create, [f"r-{i}" for i in range(objects)])
        return [_restart_once(cluster, ns, objects) for _ in range(runs)]
    finally:
        load.pool.shutdown()
        cluster.delete_namespace(ns)


def _restart_once(cluster: Cluster, ns: str, objects: int) -> dict[str, float]:
    # Nothing writes these Jobs (no Volcano controllers run in the bench cluster), so
    # one LIST before the restart is the state Redis must come back to; another after
    # the measurement checks that it still is.
    live = _live_rvs(cluster, ns)
    assert len(live) == objects, f"{len(live)} Jobs listed in {ns}, {objects} created"
    # Same namespace, same spool directory: start each run's watcher without the last's.
    shutil.rmtree(SCRATCH / f"spool-{ns}", ignore_errors=True)
    r = Redis("restart")
    system = System("kube2redis", cluster, ns, r.url)
    try:
        client = r.client()
        deadline = time.monotonic() + 600
        while not (client.exists(KEYS.relist("job", ns)) and _mirrored(client, ns, live)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"never mirrored {objects} Jobs; see {system.log}")
            time.sleep(0.2)
        time.sleep(2)  # settled: the guard has checked its marks since, nothing in flight
        lists_before = _apiserver_lists(cluster)
        relists_before = _relists(system)
        r.kill()  # SIGKILL, no persistence configured: everything is gone
        r.start()  # same port, empty; returns once it answers PING
        back_at = time.time()
        client = r.client()
        converged_s = float("nan")
        while time.time() - back_at < 300:
            if _mirrored(client, ns, live):
                converged_s = time.time() - back_at
                break
            time.sleep(0.05)
        # A second relist (the loss found twice, say) would have begun by now: the
        # guard checks every second.
        time.sleep(3)
        list_requests = _apiserver_lists(cluster) - lists_before
        relists_after = _relists(system)
        relisted = {
            reason: count - relists_before.get(reason, 0.0)
            for reason, count in relists_after.items()
            if count - relists_before.get(reason, 0.0) > 0
        }
        begin_ms, end_ms = _relist_marks(client)
        unchanged = _live_rvs(cluster, ns) == live
        clean = _verify_clean(cluster, r, ns)
        return {
            "objects": objects,
            "relist_begun_s": begin_ms / 1000 - back_at if begin_ms else float("nan"),
            "relist_appended_s": end_ms / 1000 - back_at if end_ms else float("nan"),
            "converged_s": converged_s,
            "list_requests": list_requests,
            "list_pages_one_relist": math.ceil(objects / PAGE_SIZE),
            "relists_redis_lost": relisted.pop("redis-lost", 0.0),
            "relists_other": sum(relisted.values()),
            "verify_clean": float(clean and unchanged),
        }
    finally:
        system.stop()
        r.stop()


def _live_rvs(cluster: Cluster, ns: str) -> dict[str, str]:
    """name -> resourceVersion of every Job in ns, as the API server lists them."""
    params = {"limit": "500"}
    out: dict[str, str] = {}
    while True:
        page = decode_list_page(cluster.client.get(JOBS.format(ns=ns), params, timeout=60))
        for raw in page.items or ():
            meta = decode_head(bytes(raw)).metadata
            out[meta.name] = meta.resourceVersion
        if not page.metadata.next_page:
            return out
        params["continue"] = page.metadata.next_page


def _mirrored(client: "redis.Redis", ns: str, live: dict[str, str]) -> bool:
    """Does Redis hold every object of live at its resourceVersion? The index's size
    first (one cheap call per poll); the rvs, one pipelined HGET each, once it is full."""
    if client.scard(KEYS.index("job")) < len(live):
        return False
    pipe = client.pipeline(transaction=False)
    for name in live:
        pipe.hget(KEYS.state("job", ns, name), "rv")
    stored = cast(list[bytes | None], pipe.execute())
    return all(
        rv is not None and rv.decode() == want
        for rv, want in zip(stored, live.values(), strict=True)
    )


def _samples(body: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name
    ]


def _apiserver_lists(cluster: Cluster) -> float:
    """LIST requests for Volcano Jobs in one namespace the API server has answered
    (any status), from its own /metrics (the bench cluster's admin certificate may read
    it). Only the watcher lists Jobs by namespace here: the bench's own LISTs fall
    outside the window, and the controller-manager's metadata informers list all
    namespaces at once (scope "cluster")."""
    body = cluster.client.get("/metrics", timeout=30).decode()
    return sum(
        value
        for labels, value in _samples(body, "apiserver_request_total")
        if labels.get("verb") == "LIST"
        and labels.get("group") == "batch.volcano.sh"
        and labels.get("resource") == "jobs"
        and labels.get("scope") == "namespace"
    )


def _relists(system: System) -> dict[str, float]:
    """The watcher's relists so far, by reason (summed over resources)."""
    body = urllib.request.urlopen(
        f"http://127.0.0.1:{system.watcher_port}/metrics", timeout=5
    ).read()
    out: dict[str, float] = {}
    for labels, value in _samples(body.decode(), "kube2redis_watcher_relists_total"):
        out[labels["reason"]] = out.get(labels["reason"], 0.0) + value
    return out


def _relist_marks(client: "redis.Redis") -> tuple[int, int]:
    """Redis's clock (ms, the entry id) at the first RELIST_BEGIN and the last
    RELIST_END in the stream (0 if none). In a Redis restarted empty and with no
    writes to the Jobs, the stream holds only what the relists appended."""
    stream = KEYS.stream
    head = cast(list[ev.Entry], client.xrange(stream, count=50))
    tail = cast(list[ev.Entry], client.xrevrange(stream, count=50))

    def first(rows: list[ev.Entry], kind: str) -> int:
        return next(
            (int(entry_id.split(b"-")[0]) for entry_id, f in rows if f[b"type"] == kind.encode()),
            0,
        )

    return first(head, ev.RELIST_BEGIN), first(tail, ev.RELIST_END)


# ---- reads: the mirror against the API server ----------------------------------------------

READ_QUEUES = ("q0", "q1", "q2", "q3")
READ_NAMESPACES = 10
# Volcano Job phases in these shares (of every 20 Jobs).
READ_PHASES = ("Pending",) * 10 + ("Running",) * 6 + ("Completed",) * 3 + ("Failed",)
ALL_JOBS = "/apis/batch.volcano.sh/v1alpha1/jobs"


def _read_job(name: str, ns: str, queue: str) -> bytes:
    body = json.loads(job(name, ns))
    body["spec"]["queue"] = queue
    return json.dumps(body).encode()


def _create_phased(cluster: Cluster, namespaces: list[str], objects: int) -> None:
    """`objects` Jobs over the namespaces and queues, each set to its phase through
    the status subresource (no Volcano controller runs in the bench cluster)."""
    load = Load(cluster, namespaces[0], threads=8)

    def make(i: int) -> None:
        ns = namespaces[i % len(namespaces)]
        path = JOBS.format(ns=ns)
        name = f"r-{i}"
        load.client.call("POST", path, _read_job(name, ns, READ_QUEUES[i % len(READ_QUEUES)]))
        patch = {"status": {"state": {"phase": READ_PHASES[i % len(READ_PHASES)]}}}
        load.client.call(
            "PATCH",
            f"{path}/{name}/status",
            json.dumps(patch).encode(),
            content_type="application/merge-patch+json",
        )

    list(load.pool.map(make, range(objects)))
    load.pool.shutdown()


def _api_list(client: KubeClient, path: str) -> list[bytes]:
    """Every item of a LIST, paginated as kubectl does (500 a page), as raw bytes."""
    params = {"limit": "500"}
    items: list[bytes] = []
    while True:
        page = decode_list_page(client.get(path, params, timeout=120))
        items += [bytes(raw) for raw in page.items or ()]
        if not page.metadata.next_page:
            return items
        params["continue"] = page.metadata.next_page


def _timed(
    fn: Callable[[], object], reps: int, pids: dict[str, int]
) -> tuple[list[float], dict[str, float], object]:
    """Run fn reps times: each call's latency (ms), CPU (ms per call) of each pid and of
    this process, and the last answer."""
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    own = time.process_time()
    latencies = []
    answer: object = None
    for _ in range(reps):
        began = time.perf_counter()
        answer = fn()
        latencies.append((time.perf_counter() - began) * 1000)
    cpu = {role: (cpu_seconds(pid) - before[role]) * 1000 / reps for role, pid in pids.items()}
    cpu["client"] = (time.process_time() - own) * 1000 / reps
    return sorted(latencies), cpu, answer


def reads(cluster: Cluster, objects: int, runs: int, reps: int) -> list[dict[str, float]]:
    """`objects` Jobs over 10 namespaces and 4 queues, mirrored; three questions
    dashboards ask, answered from the mirror and from the API server (LIST, filtered
    client-side where the API has no selector: a CRD's spec.queue and status phase
    have none), side by side in each run: latency p50/p99, and CPU per answer of the
    API server, Redis and the client. Also one object: Mirror.get against a hand HGET."""
    stamp = int(time.time()) % 10**6
    namespaces = [f"reads-{stamp}-{i}" for i in range(READ_NAMESPACES)]
    for ns in namespaces:
        cluster.client.call(
            "POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": ns}}).encode()
        )
    r = Redis("reads")
    try:
        _create_phased(cluster, namespaces, objects)
        system = System("kube2redis", cluster, "", r.url)
        client = r.client()
        try:
            deadline = time.monotonic() + 900
            while client.scard(KEYS.index("job")) < objects and time.monotonic() < deadline:
                time.sleep(0.5)
            assert client.scard(KEYS.index("job")) == objects, "not mirrored after 900 s"
        finally:
            system.stop()
        mirror = Mirror(client)
        api = cluster.client
        apiserver = next(c.pid for c in cluster.local.status() if c.name == "kube-apiserver")
        assert r.proc is not None
        pids = {"apiserver": apiserver, "redis": r.proc.pid}

        def api_running_q0() -> object:
            return [
                raw for raw in _api_list(api, ALL_JOBS) if values_of(raw) == Values("Running", "q0")
            ]

        def api_counts() -> object:
            return Counter(values_of(raw) for raw in _api_list(api, ALL_JOBS))

        questions: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "running_of_queue": (
                lambda: [o.raw for o in mirror.objects(Query("job", phase="Running", queue="q0"))],
                api_running_q0,
            ),
            "jobs_of_namespace": (
                lambda: [o.raw for o in mirror.objects(Query("job", namespace=namespaces[0]))],
                lambda: _api_list(api, JOBS.format(ns=namespaces[0])),
            ),
            "counts_per_phase": (lambda: mirror.counts("job"), api_counts),
        }
        key = KEYS.state("job", namespaces[0], "r-0")
        results = []
        for _ in range(runs):
            figures: dict[str, float] = {"objects": objects}
            for question, (from_mirror, from_api) in questions.items():
                answers = []
                for source, fn in (("mirror", from_mirror), ("api", from_api)):
                    latencies, cpu, answer = _timed(fn, reps, pids)
                    answers.append(answer)
                    figures[f"{question}_{source}_p50_ms"] = _pct(latencies, 50)
                    figures[f"{question}_{source}_p99_ms"] = _pct(latencies, 99)
                    for role, ms in cpu.items():
                        figures[f"{question}_{source}_cpu_{role}_ms"] = ms
                mirrored, listed = answers
                if isinstance(mirrored, list) and isinstance(listed, list):
                    assert sorted(mirrored) == sorted(listed), question
                    figures[f"{question}_answer_size"] = len(listed)
                else:
                    assert mirrored == listed, question
            hand, _, _ = _timed(lambda: client.hget(key, "object"), 2000, {})
            typed, _, _ = _timed(lambda: mirror.get("job", namespaces[0], "r-0"), 2000, {})
            figures["get_hand_hget_p50_ms"] = _pct(hand, 50)
            figures["get_mirror_get_p50_ms"] = _pct(typed, 50)
            figures["get_hand_hget_p99_ms"] = _pct(hand, 99)
            figures["get_mirror_get_p99_ms"] = _pct(typed, 99)
            results.append(figures)
        return results
    finally:
        r.stop()
        for ns in namespaces:
            cluster.delete_namespace(ns)
