"""`kube2redis localcluster`: a real control plane on loopback for trying and testing."""

import sys
import time
from pathlib import Path
from typing import Any

import click

from kube2redis.options import option


@click.group()
@option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where certs, data, logs and pids live (default: under the user cache dir).",
)
@click.pass_context
def localcluster(ctx: click.Context, state_dir: Path | None) -> None:
    """A real etcd + kube-apiserver + controller-manager on loopback, with Volcano CRDs."""
    from kube2redis.localcluster.cluster import LocalCluster

    ctx.obj = LocalCluster(state_dir)


@localcluster.command()
@click.option(
    "--volcano/--no-volcano",
    default=True,
    show_default=True,
    help="Also run Volcano's scheduler and controllers and kwok's simulated nodes.",
)
@click.pass_obj
def up(cluster: Any, volcano: bool) -> None:
    """Start the control plane (does nothing if it already runs)."""
    cluster.volcano = volcano
    began = time.monotonic()
    if not cluster.up():
        click.echo(f"local cluster already running (state in {cluster.state_dir})", err=True)
    else:
        click.echo(f"local cluster ready in {time.monotonic() - began:.1f}s", err=True)
    click.echo(cluster.env())


@localcluster.command()
@click.option("--purge", is_flag=True, help="Also delete data, certs and logs.")
@click.pass_obj
def down(cluster: Any, purge: bool) -> None:
    """Stop exactly the processes `up` started."""
    stopped = cluster.down(purge=purge)
    click.echo(
        f"stopped: {', '.join(stopped) or 'nothing was running'}"
        + (f"; removed {cluster.state_dir}" if purge else "")
    )


@localcluster.command(name="status")
@click.pass_obj
def cluster_status(cluster: Any) -> None:
    """Each component's pid, port and health."""
    rows = cluster.status()
    if not rows:
        click.echo("local cluster not started")
        sys.exit(1)
    for row in rows:
        port = str(row.port) if row.port else "-"
        click.echo(f"{row.name:<24} pid {row.pid:<8} port {port:<6} {row.detail}")
    sys.exit(0 if all(row.healthy for row in rows) else 1)


@localcluster.command()
@click.pass_obj
def env(cluster: Any) -> None:
    """Print the exports that point kubectl and kube2redis at the local cluster."""
    click.echo(cluster.env())
