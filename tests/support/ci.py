"""What a missing dependency means: a skip on a developer's machine, a failure under
CI=true; and whether a Docker engine answers (for testcontainers)."""

import os
import shutil
import subprocess
from typing import NoReturn


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    return result.returncode == 0


def unavailable(what: str) -> NoReturn:
    """Skip a test that needs what is missing; under CI=true that is a failure."""
    import pytest  # only tests call this; bench and chaos import this package without pytest

    if in_ci():
        pytest.fail(f"{what} (CI=true: this is an error, not a skip)")
    pytest.skip(what)
