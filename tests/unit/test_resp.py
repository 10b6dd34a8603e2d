"""The pure-Python packer (for platforms without hiredis) writes the same bytes as
hiredis, so both paths speak the same protocol."""

import hiredis
import pytest

from common.resp import Arg, pack_command_python

CASES: list[tuple[Arg, ...]] = [
    (b"PING",),
    ("XADD", "k8s:events", "*", "type", "MODIFIED", "received_ns", 1_700_000_000_000_000_001),
    (b"EVALSHA", b"f" * 40, 2, "k8s:job:ns:a", "k8s:index:job", b"x" * 100_000, "", -1),
    ("SET", "ключ", b"\r\n$3\r\n*1\r\n\x00\xff"),
]


@pytest.mark.parametrize("args", CASES)
def test_python_packer_matches_hiredis(args: tuple[Arg, ...]) -> None:
    # hiredis's stub declares a one-element tuple; it takes any number of arguments.
    assert pack_command_python(args) == hiredis.pack_command(args)  # type: ignore[arg-type]


def test_packed_command_is_readable_resp() -> None:
    reader = hiredis.Reader()
    reader.feed(pack_command_python(("SET", "k", b"a\r\nb", 7)))
    assert reader.gets() == [b"SET", b"k", b"a\r\nb", b"7"]
