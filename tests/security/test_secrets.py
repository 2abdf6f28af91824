"""Secrets planted in every setting and in a ``SecretStr`` parameter are never shown.

An agent runs as ``scanflow --log-level DEBUG run`` with a password, a token or
URL credentials in every NATS and MLflow setting, records to MLflow, calls
MLflow at a URI with credentials that cannot answer, and is called with a
secret parameter. Then every place a person or another program can read is
searched: the DEBUG log, ``describe``, ``agents``, ``history``, the raw
JetStream stream, MLflow's copy of the audit trail (and its raw database and
artifacts), and the CLI's message on a connection error. Zero hits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO

import pytest

from scanflow_agents import Settings
from scanflow_agents.audit import mlflow_history
from scanflow_agents.clients import Client, connect_transport
from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.redaction import MASK
from scanflow_agents.settings import MlflowSettings
from scanflow_agents.testing import die_with_parent, free_port

pytestmark = pytest.mark.timeout(300)

SECRETS = {
    "nats_url": "NatsUrlPw-7f3a",
    "nats_password": "NatsPassword-91c2",
    "nats_token": "NatsToken-4e8d",
    "mlflow_url": "MlflowUrlPw-25b9",
    "mlflow_registry_url": "MlflowRegistryPw-c04e",
    "mlflow_password": "MlflowPassword-6ad1",
    "mlflow_token": "MlflowToken-b3f7",
    "sensor_url": "SensorUrlPw-0e5c",
    "parameter": "ParamSecret-8d21",
    "cli_url": "CliUrlPw-52aa",
}

AGENT = '''
from pydantic import SecretStr

from scanflow_agents import Agent, Runs, actuator, sensor


class Vault(Agent, name="vault"):
    @actuator()
    async def login(self, user: str, key: SecretStr) -> dict[str, object]:
        """Log in somewhere.

        Args:
            user: who.
            key: the secret.
        """
        return {"user": user, "key_length": len(key.get_secret_value())}

    @sensor(every=0.5, reads=Runs(experiments=["elsewhere"], tracking_uri="SENSOR_URI"))
    async def elsewhere(self, poll) -> None:
        return None
'''


def with_credentials(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanflow_agents.runtime", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start(*args: str, env: dict[str, str], log: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scanflow_agents.runtime", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,  # gone with its test process
    )


def mlflow_files(mlflow: MlflowServer) -> str:
    """Everything MLflow stored, raw: its database and its artifacts."""
    store = Path(mlflow.backend_store_uri.removeprefix("sqlite:///"))
    files = [store, *Path(mlflow.artifacts_destination).rglob("*")]
    return "\n".join(f.read_bytes().decode("utf-8", "replace") for f in files if f.is_file())


async def test_no_secret_is_ever_shown(nats_url: str, tmp_path: Path) -> None:
    namespace = f"secrets-{uuid.uuid4().hex[:8]}"
    closed = f"http://127.0.0.1:{free_port()}"  # an MLflow that never answers
    agent_file = tmp_path / "vault.py"
    agent_file.write_text(
        AGENT.replace("SENSOR_URI", with_credentials(closed, "sensor", SECRETS["sensor_url"]))
    )
    texts: dict[str, str] = {}
    async with MlflowServer() as mlflow:
        env = {
            "SCANFLOW_NAMESPACE": namespace,
            "SCANFLOW_NATS__URL": with_credentials(nats_url, "agent", SECRETS["nats_url"]),
            "SCANFLOW_NATS__USER": "agent",
            "SCANFLOW_NATS__PASSWORD": SECRETS["nats_password"],
            "SCANFLOW_NATS__TOKEN": SECRETS["nats_token"],
            "SCANFLOW_MLFLOW__TRACKING_URI": with_credentials(
                mlflow.url, "ml", SECRETS["mlflow_url"]
            ),
            "SCANFLOW_MLFLOW__REGISTRY_URI": with_credentials(
                mlflow.url, "reg", SECRETS["mlflow_registry_url"]
            ),
            "SCANFLOW_MLFLOW__USERNAME": "ml",
            "SCANFLOW_MLFLOW__PASSWORD": SECRETS["mlflow_password"],
            "SCANFLOW_MLFLOW__TOKEN": SECRETS["mlflow_token"],
            "SCANFLOW_MLFLOW__RECORD": "true",
        }
        log_path = tmp_path / "agent.log"
        with log_path.open("w") as log:
            process = start(
                "--log-level",
                "DEBUG",
                "--warn-every",
                "0",
                "run",
                str(agent_file),
                env=env,
                log=log,
            )
            try:
                # People and scripts connect without the agent's secrets: what they are
                # shown is masked by what the agent sends, not by their own settings.
                plain = {"SCANFLOW_NAMESPACE": namespace, "SCANFLOW_NATS__URL": nats_url}
                settings = Settings.load(namespace=namespace, nats={"url": nats_url})
                async with Client.connect(settings) as client:
                    await client.wait_for_agents(["vault"], timeout=60)
                    key = SECRETS["parameter"]
                    result = await client.call("vault", "login", user="alice", key=key)
                    assert result == {"user": "alice", "key_length": len(key)}
                    dry = await client.call("vault", "login", user="bob", key=key, dry_run=True)
                    assert dry["params"] == {"user": "bob", "key": MASK}
                    await asyncio.sleep(2)  # the sensor fails against the closed MLflow
                    texts["history (client)"] = str(await client.history(agent="vault"))
                    texts["describe (client)"] = str(await client.describe("vault"))
                for command in (["describe", "vault"], ["agents"], ["history"]):
                    done = cli(*command, env=plain)
                    assert done.returncode == 0, done.stderr
                    texts[" ".join(command)] = done.stdout + done.stderr
                transport = await connect_transport(settings)
                try:
                    stored = await transport.history(f"scanflow.{namespace}.>")
                finally:
                    await transport.close()
                texts["raw stream"] = "\n".join(data.decode() for _, data in stored)
            finally:
                process.send_signal(signal.SIGTERM)
                stopped = process.wait(60)
        texts["DEBUG log"] = log_path.read_text()
        assert stopped == 0, texts["DEBUG log"][-3000:]
        recorded = await mlflow_history(MlflowSettings(tracking_uri=mlflow.url), agents=["vault"])
        texts["MLflow history"] = str(recorded)
        texts["MLflow files"] = mlflow_files(mlflow)
    done = cli(
        "--nats",
        with_credentials(f"nats://127.0.0.1:{free_port()}", "u", SECRETS["cli_url"]),
        "agents",
        env={},
    )
    assert done.returncode == 1
    texts["CLI connection error"] = done.stderr
    assert f"nats://u:{MASK}@127.0.0.1" in done.stderr

    # Something was looked at in each place...
    assert "'login'" in texts["describe (client)"]
    assert texts["raw stream"].count('"actuator"') + texts["raw stream"].count("login") > 0
    assert MASK in texts["raw stream"]
    assert MASK in texts["MLflow history"]
    assert "MLflow unreachable at http://sensor:**********@127.0.0.1" in texts["DEBUG log"]
    assert " DEBUG " in texts["DEBUG log"]
    # ...and no secret is anywhere.
    leaks = [
        (where, name) for where, text in texts.items() for name, s in SECRETS.items() if s in text
    ]
    assert leaks == []
