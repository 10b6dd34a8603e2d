import json
import logging

from common.logs import JsonFormatter, scrub


def test_scrub_removes_credentials() -> None:
    line = scrub("connect redis://user:hunter2@h:6379 with Bearer abc.def token=xyz password: p4ss")
    for secret in ("hunter2", "abc.def", "xyz", "p4ss"):
        assert secret not in line


def test_json_lines_carry_extra_fields_and_no_secret() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "login password=%s",
            "args": ("s3cret",),
            "levelname": "INFO",
            "name": "t",
            "scope": "jobs",
        }
    )
    payload = json.loads(JsonFormatter().format(record))
    assert payload["scope"] == "jobs"
    assert "s3cret" not in payload["msg"]
