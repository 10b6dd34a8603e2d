"""Where the repository is: computed once, by the local control plane's module."""

from pathlib import Path
from typing import Final

from kube2redis.localcluster.cluster import REPO_ROOT

REPO: Final[Path] = REPO_ROOT
