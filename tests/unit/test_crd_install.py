"""Installing the Volcano CRDs waits through the moments a real API server shows:
a CRD with no conditions yet, then Established, then its storage still starting."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kube2redis.localcluster.cluster import (
    VOLCANO_CRD_DIRS,
    LocalClusterError,
    install_volcano_crds,
)

JOBS = "jobs.batch.volcano.sh"
HYPERNODES = "hypernodes.topology.volcano.sh"


def _crd(name: str, established: bool | None) -> dict[str, Any]:
    """A CRD as the API server returns it; established=None: no status written yet."""
    crd: dict[str, Any] = {"kind": "CustomResourceDefinition", "metadata": {"name": name}}
    if established is not None:
        status = "True" if established else "False"
        crd["status"] = {"conditions": [{"type": "Established", "status": status}]}
    return crd


class ScriptedKubectl:
    """Answers `get crd -o json` and the served check from a script, records every call."""

    def __init__(self, crd_lists: list[list[dict[str, Any]]], served: list[int]) -> None:
        self.crd_lists, self.served = crd_lists, served
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if args[:2] == ("get", "crd"):
            items = self.crd_lists.pop(0) if len(self.crd_lists) > 1 else self.crd_lists[0]
            names = [a for a in args[2:] if not a.startswith("-") and a != "json"]
            if names:
                items = [i for i in items if i["metadata"]["name"] in names]
            # As kubectl does: one name asked for comes back bare, not in a List.
            doc = items[0] if len(names) == 1 else {"kind": "List", "items": items}
            return subprocess.CompletedProcess(args, 0, json.dumps(doc), "")
        if args[0] == "get":
            code = self.served.pop(0) if len(self.served) > 1 else self.served[0]
            return subprocess.CompletedProcess(args, code, "", "storage is (re)initializing")
        return subprocess.CompletedProcess(args, 0, "", "")


@pytest.fixture
def volcano_dir(tmp_path: Path) -> Path:
    for directory, stem in zip(
        VOLCANO_CRD_DIRS, ("batch.volcano.sh_jobs", "topology.volcano.sh_hypernodes"), strict=True
    ):
        (tmp_path / directory).mkdir(parents=True)
        (tmp_path / directory / f"{stem}.yaml").write_text("kind: CustomResourceDefinition\n")
    return tmp_path


def test_waits_for_every_crd_to_be_established_then_served(volcano_dir: Path) -> None:
    kubectl = ScriptedKubectl(
        crd_lists=[
            [_crd(JOBS, None), _crd(HYPERNODES, None)],  # just created: no conditions
            [_crd(JOBS, True), _crd(HYPERNODES, False)],
            [_crd(JOBS, True), _crd(HYPERNODES, True)],
        ],
        served=[1, 0],
    )
    install_volcano_crds(kubectl, volcano_dir, timeout_s=30)
    assert kubectl.calls[0][:2] == ("apply", "--server-side")
    assert sum(1 for c in kubectl.calls if c[:2] == ("get", "crd")) == 3
    served_checks = [c for c in kubectl.calls if c[:2] == ("get", f"{HYPERNODES},{JOBS}")]
    assert len(served_checks) == 2


def test_names_the_crd_that_never_becomes_established(volcano_dir: Path) -> None:
    kubectl = ScriptedKubectl(crd_lists=[[_crd(JOBS, True), _crd(HYPERNODES, None)]], served=[0])
    with pytest.raises(LocalClusterError, match=f"not established in time: {HYPERNODES}$"):
        install_volcano_crds(kubectl, volcano_dir, timeout_s=0.5)


def test_no_crd_files_is_one_clear_error(tmp_path: Path) -> None:
    kubectl = ScriptedKubectl(crd_lists=[[]], served=[0])
    with pytest.raises(LocalClusterError, match="no CRDs under"):
        install_volcano_crds(kubectl, tmp_path)
    assert kubectl.calls == []
