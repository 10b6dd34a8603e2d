"""The contracts between the processes and their scripts are declared once
(common/records.py, common/keys.py, projector/scripts.py); these tests hold the
Lua scripts, and every other file, to the declarations."""

import re
from pathlib import Path
from typing import NamedTuple

import pytest

from common.keys import Keys
from common.records import (
    CHANGE_FIELDS,
    DEAD_LETTER_FIELDS,
    Change,
    ChangeType,
    Outcome,
    change_fields,
    change_from_fields,
)
from projector.scripts import (
    LUA_DIR,
    ApplyArgs,
    ApplyKeys,
    RelistArgs,
    RelistKeys,
    RelistScanArgs,
    RelistScanKeys,
    RelistStageArgs,
    RelistStageKeys,
    RelistStep,
    RelistSweepArgs,
    RelistSweepKeys,
    Script,
)

ROOT = Path(__file__).resolve().parents[2]


def _unpacked(source: str, table: str) -> list[str]:
    """The names of `local a, b, ... = unpack(TABLE...)` in a script."""
    match = re.search(r"^local ([\w,\s]+?)\s*=\s*unpack\(" + table + r"\b", source, re.M)
    assert match, f"no `local ... = unpack({table})` line"
    return [name.strip() for name in match.group(1).split(",")]


@pytest.mark.parametrize(
    ("script", "keys", "args"),
    [
        ("apply.lua", ApplyKeys, ApplyArgs),
        ("relist_stage.lua", RelistStageKeys, RelistStageArgs),
        ("relist.lua", RelistKeys, RelistArgs),
        ("relist_scan.lua", RelistScanKeys, RelistScanArgs),
        ("relist_sweep.lua", RelistSweepKeys, RelistSweepArgs),
    ],
)
def test_each_scripts_keys_and_argv_are_the_layout_python_sends(
    script: str, keys: type[NamedTuple], args: type[NamedTuple]
) -> None:
    source = (LUA_DIR / script).read_text()
    assert _unpacked(source, "KEYS") == list(keys._fields)
    assert _unpacked(source, "ARGV") == list(args._fields)


SCRIPTS = ("apply.lua", "relist_stage.lua", "relist.lua", "relist_scan.lua", "relist_sweep.lua")


def test_the_scripts_answer_only_declared_outcomes_and_write_declared_change_fields() -> None:
    for script in SCRIPTS:
        source = Script.read(script).source.decode()
        # A relist's steps but its last answer a RelistStep (projector/scripts.py).
        for answer in re.findall(r"return \{?'([\w-]+)'", source):
            assert answer in set(Outcome) | set(RelistStep), f"{script}: {answer!r}"
    for script in ("apply.lua", "relist_sweep.lua"):
        source = Script.read(script).source.decode()
        feeds = re.findall(r"XADD', changes, .*?'\*',\s*(.*?)\)", source, re.S)
        assert feeds, f"{script} writes no change-feed entry"
        for fields in feeds:
            tokens = [token.strip() for token in fields.split(",")]
            assert [name.strip("'") for name in tokens[0::2]] == list(CHANGE_FIELDS)


def test_shared_rules_are_written_once() -> None:
    shared = (LUA_DIR / "shared.lua").read_text()
    for script in SCRIPTS:
        own = (LUA_DIR / script).read_text()
        assert "local function newer" not in own
        assert Script.read(script).source.startswith(b"#!lua\n" + shared.encode())


def test_a_change_reads_back_as_written() -> None:
    change = Change(key="k8s:job:ns:a", type=ChangeType.MODIFIED, rv="12", phase="Running")
    written = {k.encode(): v.encode() for k, v in change_fields(change).items()}
    assert change_from_fields(written) == change
    with pytest.raises(ValueError, match="SOMETHING"):
        change_from_fields({**written, b"type": b"SOMETHING"})


def test_a_namespace_is_read_from_a_member_whose_name_has_colons() -> None:
    assert Keys.namespace_of("ns:system:controller:job", namespaced=True) == "ns"
    assert Keys.namespace_of("system:controller:job", namespaced=False) == ""
    assert Keys().state_of("role", "ns:system:a") == Keys().state("role", "ns", "system:a")


# ---- no stray literals ----------------------------------------------------------------

# Where the names are declared: the only files allowed to spell them.
DECLARATIONS = {"common/keys.py", "common/records.py", "projector/scripts.py"}
SOURCES = ("common", "watcher", "projector", "kube2redis", "chaos", "bench")


def _declared_literals() -> set[str]:
    keys = Keys()
    names = {
        keys.stream,
        keys.dead_letter,
        keys.changes,
        keys.checkpoints,
        keys.checkpoint_marks,
        keys.checkpoint_writers,
        keys.checkpoint_kinds,
        keys.cluster,
        keys.resync_requests,
        keys.watchers,
        keys.index(""),
        f"{keys.prefix}:tombstone:",
        f"{keys.prefix}:relist:",
        f"{keys.prefix}:projectors:",
        f"{keys.prefix}:by:",
        f"{keys.prefix}:counts:",
        f"{keys.prefix}:indexed:",
    }
    names |= set(DEAD_LETTER_FIELDS)
    names |= {o.value for o in Outcome if "-" in o.value or len(o.value) > 8}
    return names


def test_no_key_field_or_outcome_name_is_spelled_outside_its_declaration() -> None:
    literals = _declared_literals()
    pattern = re.compile(r"""["']([^"'\n]*)["']""")
    stray: list[str] = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            # bench/peers: other tools' mirrors, compared with ours; they share no code.
            if relative in DECLARATIONS or "/scratch/" in relative or "/peers/" in relative:
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                for literal in pattern.findall(line):
                    if literal in literals or any(
                        literal.startswith(name) and name.endswith(":") for name in literals
                    ):
                        stray.append(f"{relative}:{number}: {literal!r}")
    assert stray == []
