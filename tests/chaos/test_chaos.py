"""A short seeded chaos run in CI (the soak is `make chaos DURATION=3600`), and
proof that its checker catches a broken projector rather than only passing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.toxiproxy import binary
from tests.support.ci import unavailable
from tests.support.paths import REPO

# The chaos run starts its own control plane.
pytestmark = pytest.mark.kube


def _chaos(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    if not binary().exists():
        unavailable(f"toxiproxy (make toxiproxy) at {binary()}")
    results = tmp_path / "results"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos",
            "--workdir",
            str(tmp_path / "work"),
            "--results",
            str(results),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    (found,) = results.glob("*.json")
    summary: dict[str, object] = json.loads(found.read_text())
    return run, summary


def test_a_short_seeded_run_of_overlapping_faults_finds_nothing_wrong(tmp_path: Path) -> None:
    run, summary = _chaos(tmp_path, "--seed", "7", "--duration", "180")
    assert run.returncode == 0, run.stderr[-5000:]
    assert summary["violations"] == []
    faults = summary["faults_by_kind"]
    assert isinstance(faults, dict) and len(faults) >= 5, faults
    assert "chaos: seed 7" in run.stderr  # the seed and the plan are printed for a replay
    assert "plan round 0" in run.stderr


def test_the_checker_catches_a_projector_without_its_compare_and_set(tmp_path: Path) -> None:
    run, summary = _chaos(
        tmp_path,
        "--seed",
        "2",
        "--duration",
        "30",
        "--faults",
        "resync",  # every object listed again: a projector without its compare re-applies it
        "--break-cas",
    )
    assert run.returncode == 1, run.stderr[-5000:]
    violations = summary["violations"]
    assert isinstance(violations, list) and violations
    assert {v["check"] for v in violations} & {"feed-order", "final-state", "resurrected"}
    assert "VIOLATION" in run.stderr
