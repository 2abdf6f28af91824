"""Real nats-servers configured for authentication, and the keys, JWTs and certificates they need.

Everything is generated per test: nkeys with the ``nkeys`` package, NATS JWTs
signed with them (operator → account → user, as ``nsc`` would write them), and
a small PKI (a CA, a server certificate for 127.0.0.1, a client certificate)
with ``cryptography``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scanflow_agents.transports.servers import NatsServer


@dataclass(frozen=True)
class NKey:
    seed: bytes
    public: str

    @property
    def pair(self) -> nkeys.KeyPair:
        return nkeys.from_seed(bytearray(self.seed))


def new_nkey(prefix: int) -> NKey:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return NKey(seed=bytes(seed), public=nkeys.from_seed(bytearray(seed)).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(subject: NKey, issuer: NKey, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (ed25519-nkey) about ``subject``, signed by ``issuer``."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject.public,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = issuer.pair.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(signature)}"


def creds_file(user_jwt: str, user: NKey) -> str:
    """The text of a .creds file, as ``nsc`` writes it."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )


@pytest.fixture
def serve_nats(tmp_path: Path) -> Iterator[Any]:
    """Start nats-servers with a given configuration text; all are stopped after the test."""
    started: list[NatsServer] = []

    def start(config: str, *, scheme: str = "nats") -> NatsServer:
        path = tmp_path / f"nats-{len(started)}.conf"
        path.write_text(config)
        server = NatsServer(config=str(path), scheme=scheme).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


def _key_file(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger's."""

    def pem(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("scanflow test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _certificate("another CA", other_ca_key, None, ca=True)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    return Pki(
        ca=pem(tmp_path / "ca.pem", ca),
        server_cert=pem(
            tmp_path / "server.pem", _certificate("nats", server_key, issuer, server=True)
        ),
        server_key=_key_file(tmp_path / "server-key.pem", server_key),
        client_cert=pem(tmp_path / "client.pem", _certificate("planner", client_key, issuer)),
        client_key=_key_file(tmp_path / "client-key.pem", client_key),
        stranger_cert=pem(
            tmp_path / "stranger.pem",
            _certificate("stranger", stranger_key, (other_ca.subject, other_ca_key)),
        ),
        stranger_key=_key_file(tmp_path / "stranger-key.pem", stranger_key),
    )


@pytest.fixture
def kit() -> SimpleNamespace:
    """The key and JWT makers of this module, for tests (test modules cannot import it)."""
    return SimpleNamespace(new_nkey=new_nkey, jwt=jwt, creds_file=creds_file)
