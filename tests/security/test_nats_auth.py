"""NATS authentication options against real nats-servers configured for each.

Each test starts a nats-server with the configuration it needs, connects the
way an agent does (``connect_transport`` with the settings tree), and checks a
round trip, or that a refused connection names the server's reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest

from scanflow_agents import Settings
from scanflow_agents.clients import connect_transport
from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.serving.reporting import Reporter, subject
from scanflow_agents.serving.stats import ServingStats
from scanflow_agents.transports import Message, TransportError

pytestmark = pytest.mark.timeout(180)


def settings(url: str, **nats: Any) -> Settings:
    return Settings.load(nats={"url": url, "connect_timeout": 3, **nats})


async def round_trip(config: Settings) -> None:
    """Connect as an agent does (event stream included) and answer one request."""
    transport = await connect_transport(config, name="auth-test")
    try:

        async def echo(message: Message) -> None:
            await message.respond(b"pong:" + message.data)

        await transport.subscribe("auth.echo", echo)
        await transport.flush()
        assert await transport.request("auth.echo", b"ping", 5) == b"pong:ping"
        await transport.publish_durable("scanflow.default.events.auth.test", b"{}")
    finally:
        await transport.close()


async def refused(config: Settings) -> str:
    with pytest.raises(TransportError) as caught:
        await connect_transport(config)
    text = str(caught.value)
    assert "no servers available" not in text
    return text


async def test_user_and_password_and_the_servers_reason(serve_nats: Any) -> None:
    server = serve_nats('authorization { user: "bob", password: "s3cret-pw" }')
    await round_trip(settings(server.url, user="bob", password="s3cret-pw"))
    text = await refused(settings(server.url, user="bob", password="wrong-pw"))
    assert "Authorization Violation" in text
    # The password in a URL is refused the same way, and never printed.
    url = server.url.replace("nats://", "nats://bob:wrong-pw@")
    text = await refused(settings(url))
    assert "Authorization Violation" in text
    assert "wrong-pw" not in text
    assert "nats://bob:**********@127.0.0.1" in text


async def test_token(serve_nats: Any) -> None:
    server = serve_nats('authorization { token: "t0ken-abcdefghijkl" }')
    await round_trip(settings(server.url, token="t0ken-abcdefghijkl"))
    await round_trip(settings(server.url.replace("nats://", "nats://t0ken-abcdefghijkl@")))
    text = await refused(settings(server.url.replace("nats://", "nats://wrong-token-xyz@")))
    assert "Authorization Violation" in text
    assert "wrong-token-xyz" not in text


async def test_nkeys_seed_file(serve_nats: Any, kit: Any, tmp_path: Path) -> None:
    new_nkey = kit.new_nkey
    user, stranger = new_nkey(nkeys.PREFIX_BYTE_USER), new_nkey(nkeys.PREFIX_BYTE_USER)
    server = serve_nats(f'authorization {{ users = [ {{ nkey: "{user.public}" }} ] }}')
    (tmp_path / "user.nk").write_bytes(user.seed + b"\n")
    (tmp_path / "stranger.nk").write_bytes(stranger.seed)
    await round_trip(settings(server.url, nkeys_seed=str(tmp_path / "user.nk")))
    text = await refused(settings(server.url, nkeys_seed=str(tmp_path / "stranger.nk")))
    assert "Authorization Violation" in text
    assert stranger.seed.decode() not in text
    text = await refused(settings(server.url, nkeys_seed=str(tmp_path / "missing.nk")))
    assert f"nats.nkeys_seed names {tmp_path / 'missing.nk'}, which is not a readable file" in text


async def test_credentials_file_of_an_operator_setup(
    serve_nats: Any, kit: Any, tmp_path: Path
) -> None:
    new_nkey, jwt, creds_file = kit.new_nkey, kit.jwt, kit.creds_file
    operator = new_nkey(nkeys.PREFIX_BYTE_OPERATOR)
    account = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    user = new_nkey(nkeys.PREFIX_BYTE_USER)
    unlimited = {
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": True, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    }  # fmt: skip
    system = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account
    operator_jwt = jwt(
        operator, operator, "scanflow-op", {"type": "operator", "system_account": system.public}
    )
    account_jwt = jwt(account, operator, "team", {"type": "account", "limits": unlimited})
    system_jwt = jwt(system, operator, "SYS", {"type": "account"})
    user_jwt = jwt(
        user, account, "planner", {"type": "user", "subs": -1, "data": -1, "payload": -1}
    )
    server = serve_nats(
        f"operator: {operator_jwt}\n"
        "resolver: MEMORY\n"
        f"system_account: {system.public}\n"
        f"resolver_preload: {{ {account.public}: {account_jwt}, {system.public}: {system_jwt} }}\n"
    )
    (tmp_path / "planner.creds").write_text(creds_file(user_jwt, user))
    await round_trip(settings(server.url, creds=str(tmp_path / "planner.creds")))
    # A user signed by an account the server does not know is refused, with the reason.
    stranger_account = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    stranger_jwt = jwt(user, stranger_account, "x", {"type": "user"})
    (tmp_path / "stranger.creds").write_text(creds_file(stranger_jwt, user))
    text = await refused(settings(server.url, creds=str(tmp_path / "stranger.creds")))
    assert "Authorization Violation" in text


async def test_mutual_tls_with_a_ca_a_certificate_and_a_key(serve_nats: Any, pki: Any) -> None:
    server = serve_nats(
        "tls {\n"
        f'  cert_file: "{pki.server_cert}"\n'
        f'  key_file: "{pki.server_key}"\n'
        f'  ca_file: "{pki.ca}"\n'
        "  verify: true\n"
        "}\n",
        scheme="tls",
    )
    mutual = {
        "tls_ca": str(pki.ca),
        "tls_cert": str(pki.client_cert),
        "tls_key": str(pki.client_key),
    }
    await round_trip(settings(server.url, **mutual))
    # No CA: the server's certificate is not trusted, and the error says so.
    # (nats-py hangs after this failure; the transport's bound ends the wait: keep it short.)
    text = await refused(
        settings(
            server.url,
            tls_cert=str(pki.client_cert),
            tls_key=str(pki.client_key),
            connect_timeout=1,
        )
    )
    assert "TLS: the server's certificate is not trusted" in text
    # A certificate signed by another CA is refused by the server.
    stranger = {**mutual, "tls_cert": str(pki.stranger_cert), "tls_key": str(pki.stranger_key)}
    text = await refused(settings(server.url, **stranger))
    assert "TLS: TLSV1_ALERT_UNKNOWN_CA" in text
    # No client certificate at all: the server asks for one.
    text = await refused(settings(server.url, tls_ca=str(pki.ca)))
    assert "TLS: TLSV13_ALERT_CERTIFICATE_REQUIRED" in text


def test_a_key_without_a_certificate_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nats\.tls_key is set without nats\.tls_cert"):
        Settings.load(nats={"tls_key": str(tmp_path / "key.pem")})


def test_the_servers_reason_outranks_a_reset_that_follows_it() -> None:
    # A loaded machine showed the order: the refusal, then the reset of the socket the
    # server closed after it. The refusal is what the user needs to read.
    import ssl

    import nats.errors

    from scanflow_agents.transports.connecting import ConnectErrors

    errors = ConnectErrors()
    errors.add(nats.errors.AuthorizationError())
    errors.add(ConnectionResetError(104, "Connection reset by peer"))
    assert "Authorization Violation" in errors.reason(nats.errors.NoServersError())

    # A TLS failure is a socket error too, but it says why: it is kept.
    tls = ConnectErrors()
    tls.add(ssl.SSLError(1, "TLSV1_ALERT_UNKNOWN_CA"))
    tls.add(ConnectionResetError(104, "Connection reset by peer"))
    assert tls.reason(nats.errors.NoServersError()).startswith("TLS:")

    # Only resets seen: the last one is the reason.
    reset = ConnectErrors()
    reset.add(ConnectionRefusedError(111, "Connection refused"))
    assert "ConnectionRefusedError" in reset.reason(nats.errors.NoServersError())


async def test_a_model_server_reports_with_the_credentials_agents_connect_with(
    serve_nats: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A model server pod gets the agents' SCANFLOW_NATS__* variables from the
    # platform; its reports must reach a NATS that refuses anonymous clients.
    server = serve_nats('authorization { user: "bob", password: "s3cret-pw" }')
    config = ServingConfig(
        model_uri="models:/digits/1", nats_url=server.url, workflow="serve", node="model",
        report_interval=3600, probe=False,
    )  # fmt: skip
    reader = await nats.connect(server.url, user="bob", password="s3cret-pw")
    try:
        received = await reader.subscribe(subject(config))
        monkeypatch.setenv("SCANFLOW_NATS__USER", "bob")
        monkeypatch.setenv("SCANFLOW_NATS__PASSWORD", "s3cret-pw")
        async with Reporter(config, ServingStats()) as reporter:
            await reporter.report()
            message = await received.next_msg(timeout=5)
        assert json.loads(message.data)["payload"]["node"] == "model"
        # A wrong password: serving goes on, and the log says why reports are not sent.
        monkeypatch.setenv("SCANFLOW_NATS__PASSWORD", "wrong-pw")
        async with Reporter(config, ServingStats()) as reporter:
            await reporter.report()
        assert "Authorization Violation" in caplog.text
        assert "wrong-pw" not in caplog.text
    finally:
        await reader.close()


async def test_a_model_server_with_bad_nats_settings_serves_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SCANFLOW_NATS__PASSWROD", "s3cret-pw")  # a misspelt setting
    config = ServingConfig(
        model_uri="models:/digits/1", nats_url="nats://127.0.0.1:1", report_interval=3600,
        probe=False,
    )  # fmt: skip
    async with Reporter(config, ServingStats()) as reporter:
        assert (await reporter.report())["sequence"] == 1
    assert "bad NATS settings in the environment" in caplog.text
    assert "nats.passwrod" in caplog.text
