"""The callee processes of the core benchmark that are not ``scanflow run``.

    python bench/_peers.py echo NATS_URL SUBJECT     raw nats-py responder
    python bench/_peers.py http PORT                 FastAPI on uvicorn, one worker
    python bench/_peers.py host NATS_URL NS COUNT    COUNT idle agents in one process

Each runs until SIGTERM. Heavy imports happen inside the role that needs them,
so the agent host carries no HTTP stack in its memory figure.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

# Raw nats-py runs on the same event loop as the agents (uvloop where installed,
# as `scanflow run` does), and uvicorn picks uvloop itself (its loop "auto").
from scanflow_agents._kit import loops


async def _until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def echo(nats_url: str, subject: str) -> None:
    """Answer every request with its JSON payload, decoded and encoded again like a handler."""
    import nats

    nc = await nats.connect(nats_url, name="bench-echo")

    async def respond(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(json.dumps(json.loads(msg.data)).encode())

    await nc.subscribe(subject, cb=respond)
    await nc.flush()
    print("READY", flush=True)
    await _until_terminated()
    await nc.drain()


def http(port: int) -> None:
    """The original Scanflow design: a JSON endpoint on FastAPI, served by uvicorn."""
    import uvicorn
    from _http_app import app

    # Its best case: no access log line per request (the default would add one),
    # and uvloop and httptools when installed (uvicorn's "auto" picks them).
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


async def host(nats_url: str, namespace: str, count: int) -> None:
    """Serve ``count`` idle agents (idle-0, idle-1, ...) on one connection, as ``scanflow run``."""
    from _agents import Idle
    from scanflow_agents.runtime.serving import serve

    from scanflow_agents import Settings

    settings = Settings.load(namespace=namespace, nats={"url": nats_url})
    agents = [Idle(name=f"idle-{i}", settings=settings) for i in range(count)]
    await serve(agents, settings)


def main(argv: list[str]) -> None:
    role, args = argv[0], argv[1:]
    if role == "echo":
        loops.run(lambda: echo(args[0], args[1]))
    elif role == "http":
        http(int(args[0]))
    elif role == "host":
        loops.run(lambda: host(args[0], args[1], int(args[2])))
    else:
        raise SystemExit(f"unknown role {role!r}: use echo, http or host")


if __name__ == "__main__":
    main(sys.argv[1:])
