"""Redis with a password, an ACL user and TLS: real redis-server processes."""

import datetime as dt
import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common import redisconn
from kube2redis.localcluster.processes import free_port
from tests import procs as kprocs
from tests.support.ci import unavailable
from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.support.waits import wait_until


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[RedisServer]:
    if not REDIS_SERVER:
        unavailable("redis-server is not installed")
    server = RedisServer(
        tmp_path / "redis",
        password="s3cret-pw",
        extra_args=["--user", "feeder", "on", ">feeder-pw", "~k8s:*", "&*", "+@all"],
    )
    server.start()
    yield server
    server.stop()


def test_password_and_acl_user(secured: RedisServer) -> None:
    plain = f"redis://127.0.0.1:{secured.port}/0"
    ok = kprocs.run(["--redis-url", plain, "--redis-password", "s3cret-pw", "status", "--json"])
    assert ok.returncode == 0, ok.stderr
    acl = kprocs.run(
        ["status", "--json"],
        {
            "KUBE2REDIS_REDIS_URL": plain,
            "KUBE2REDIS_REDIS_USERNAME": "feeder",
            "KUBE2REDIS_REDIS_PASSWORD": "feeder-pw",
        },
    )
    assert acl.returncode == 0, acl.stderr
    denied = kprocs.run(["--redis-url", plain, "--redis-password", "wrong", "status"])
    assert denied.returncode == 1
    assert "s3cret" not in denied.stderr and "wrong" not in denied.stderr.replace("WRONGPASS", "")
    assert len(denied.stderr.strip().splitlines()) == 1
    # A projector waits out an unreachable Redis, never a wrong password: one line, exit.
    project = kprocs.run(["--redis-url", plain, "--redis-password", "wrong", "project"])
    assert project.returncode == 1
    assert len(project.stderr.strip().splitlines()) == 1


def _tls_material(directory: Path) -> tuple[Path, Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = directory / "redis.crt", directory / "redis.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem, crt


def test_tls(tmp_path: Path) -> None:
    if not REDIS_SERVER:
        unavailable("redis-server is not installed")
    crt, key, ca = _tls_material(tmp_path / "tls")
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(crt),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--requirepass",
            "tls-pw",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"rediss://127.0.0.1:{port}/0"

        def answers() -> bool:
            try:
                return bool(redisconn.connect(url, password="tls-pw", ca_file=ca).ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, 10, "the TLS redis-server")
        ok = kprocs.run(
            [
                "--redis-url",
                url,
                "--redis-ca-file",
                str(ca),
                "--redis-password",
                "tls-pw",
                "status",
                "--json",
            ]
        )
        assert ok.returncode == 0, ok.stderr
        untrusted = kprocs.run(["--redis-url", url, "--redis-password", "tls-pw", "status"])
        assert untrusted.returncode == 1
        assert "certificate" in untrusted.stderr.lower()
    finally:
        proc.terminate()
        proc.wait(10)
