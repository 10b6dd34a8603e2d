"""`python -m kube2redis` is the `kube2redis` command."""

from kube2redis.cli import main

main()
