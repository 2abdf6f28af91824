"""How to open a NATS connection from the settings: servers, authentication, TLS, and why it failed.

Authentication follows what nats-server offers: user and password, a token,
an nkeys seed file, or a credentials file (a user JWT with its seed, for
servers run in operator mode). TLS takes the CA that signed the server's
certificate and, for mutual TLS, this client's certificate and key.

A failed first connection names the server's own reason
("Authorization Violation", a certificate the CA did not sign...), not
nats-py's final "no servers available", and never prints URL credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client

from scanflow_agents.redaction import redact
from scanflow_agents.settings import NatsSettings


class ConnectSetupError(ValueError):
    """The settings name a file that cannot be used (missing, unreadable, not a key)."""


class ConnectFailed(ConnectionError):
    """No server took the first connection; the message is the most telling reason."""


async def open_connection(
    settings: NatsSettings,
    *,
    name: str,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    **callbacks: Any,
) -> Client:
    """A NATS connection as every process of the project opens one (agents, consoles,
    model servers): the servers, authentication and TLS of ``settings``.

    The first connection fails fast, so a wrong URL or refused credentials are
    a clear error at once; once connected, the client reconnects for ever.

    Args:
        settings: The ``nats`` section of the settings tree.
        name: The connection's name (what ``nats-server`` shows for it).
        error_cb: Also told of every error nats-py reports.
        callbacks: More nats-py callbacks (``disconnected_cb``, ``reconnected_cb``).

    Raises:
        ConnectSetupError: A named file (creds, seed, CA...) cannot be used.
        ConnectFailed: No server took the connection; the message names the server's
            reason where it gave one, never URL credentials.
    """
    attempts = ConnectErrors()

    async def on_error(exc: Exception) -> None:
        attempts.add(exc)
        if error_cb is not None:
            await error_cb(exc)

    options: dict[str, Any] = {
        "servers": servers(settings),
        "name": name,
        "connect_timeout": settings.connect_timeout,
        "max_reconnect_attempts": 2,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
        "error_cb": on_error,
        **callbacks,
        **auth_options(settings),
    }
    client = Client()
    # nats-py can hang after some failed TLS handshakes (an untrusted server
    # certificate): bound the whole first connection, every attempt included.
    deadline = settings.connect_timeout * 3 * len(options["servers"]) + 2
    try:
        async with asyncio.timeout(deadline):
            await client.connect(**options)
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.close()
        raise ConnectFailed(attempts.reason(exc)) from exc
    except asyncio.CancelledError:
        # Stopped half-way (a console closing while it connects): nats-py would
        # leave its socket open until the garbage collector finds it.
        with contextlib.suppress(Exception):
            await client.close()
        raise
    client.options["max_reconnect_attempts"] = -1
    return client


def servers(settings: NatsSettings) -> list[str]:
    """The server URLs of ``settings`` (a comma-separated list)."""
    return [url.strip() for url in settings.url.split(",") if url.strip()]


def auth_options(settings: NatsSettings) -> dict[str, Any]:
    """The keyword arguments of ``nats.connect`` for authentication and TLS.

    Raises:
        ConnectSetupError: a named file (creds, seed, CA, certificate, key) is missing
            or unusable; the message names the setting and the path.
    """
    options: dict[str, Any] = {"inbox_prefix": settings.inbox_prefix}
    if settings.user:
        options["user"] = settings.user
        options["password"] = settings.password.get_secret_value() if settings.password else ""
    if settings.token:
        options["token"] = settings.token.get_secret_value()
    if settings.creds:
        options["user_credentials"] = _readable(settings.creds, "nats.creds")
        _needs_nkeys("nats.creds")
    if settings.nkeys_seed:
        options["nkeys_seed"] = _readable(settings.nkeys_seed, "nats.nkeys_seed")
        _needs_nkeys("nats.nkeys_seed")
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    if settings.tls_hostname:
        options["tls_hostname"] = settings.tls_hostname
    return options


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """The TLS context for a CA and/or client certificate; ``None`` if neither is set.

    Without either, a ``tls://`` URL still works with the system's CAs (nats-py's default).
    """
    if not (settings.tls_ca or settings.tls_cert):
        return None
    try:
        cafile = _readable(settings.tls_ca, "nats.tls_ca") if settings.tls_ca else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except ssl.SSLError as exc:
        raise ConnectSetupError(f"nats.tls_ca {settings.tls_ca} is not a CA bundle: {exc}") from exc
    if settings.tls_cert:
        cert = _readable(settings.tls_cert, "nats.tls_cert")
        key = _readable(settings.tls_key, "nats.tls_key") if settings.tls_key else None
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ConnectSetupError(
                f"nats.tls_cert {cert} (key {key or 'in the same file'}) cannot be used: {exc}"
            ) from exc
    return context


def _readable(path: str, setting: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConnectSetupError(f"{setting} names {path}, which is not a readable file")
    return str(file)


def _needs_nkeys(setting: str) -> None:
    # nats-py signs the server's nonce with nkeys, imported only when connecting.
    if importlib.util.find_spec("nkeys") is None:
        raise ConnectSetupError(
            f"{setting} needs the nkeys package: pip install 'scanflow-agents[nkeys]'"
        )


class ConnectErrors:
    """Collects what went wrong while connecting, to tell the real reason afterwards.

    nats-py reports each failed attempt to its error callback and then raises a
    bare ``NoServersError``; the server's own words (an ``-ERR`` line such as
    'Authorization Violation', a TLS failure) are in the attempts.
    """

    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    def add(self, exc: BaseException) -> None:
        self.seen.append(exc)

    def reason(self, final: BaseException) -> str:
        """The most telling error: the server's own words if an attempt got some, else the
        last attempt's error, else ``final`` (what ended the connect).

        A server that refuses credentials closes the connection right after its ``-ERR``
        line, so the next attempt (or the same one's reader) may see only a reset socket;
        that reset says less than the refusal before it, whatever the order they came in.
        """
        telling = [e for e in self.seen if not isinstance(e, nats.errors.NoServersError)]
        said = [e for e in telling if not _only_transport(e)]
        chosen = said[-1] if said else telling[-1] if telling else final
        return redact(describe_error(chosen))


def _only_transport(exc: BaseException) -> bool:
    """A socket-level failure (reset, refused, EOF) that carries no reason of the server's.

    TLS errors are ``OSError`` subclasses too, but they do say why: they are kept.
    """
    return isinstance(exc, OSError | EOFError) and not isinstance(exc, ssl.SSLError)


def describe_error(exc: BaseException) -> str:
    """One line for a connection error: the server's words where there are some."""
    if isinstance(exc, nats.errors.AuthorizationError):
        return "the server refused the credentials ('Authorization Violation')"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {getattr(exc, 'reason', None) or exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
