"""Run the chart's agent pods as real containers and check what a cluster would check.

The closest this CI gets to a cluster: the chart is rendered with helm, and its
ConfigMaps and agent Deployments go to ``podman kube play`` on the host network,
against a private nats-server and MLflow server. Then:

- every agent's readiness and liveness probes pass (performed as the kubelet
  does: an HTTP GET on the probe's path and port);
- the restricted security context is in force (read-only root, user 10001,
  no new privileges, the memory limit), and only /tmp is writable;
- the chart's ``helm test`` pod, played the same way, finds every agent;
- ``planner.status`` answers for the application's workflow;
- SIGTERM (``podman stop`` with the pod's grace period) drains each agent and
  it exits 0 in time.

It prints the time from container start to ready and the memory of each idle
agent container. Two changes are made to the rendered objects, both for podman
4.3 and neither to what the pods run: container ``ports`` are dropped (podman
refuses port mappings on the host network; each agent has its own port), and
each Deployment's emptyDir gets a name of its own (podman maps an emptyDir to a
named volume, which pods with the same volume name would share).

Not proven here: scheduling, RBAC enforcement, Services and network policies,
probes run by a real kubelet, rolling updates.

Usage: python .ci/check_pods.py --image localhost/scanflow-agents:ci --helm PATH
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from scanflow_agents import Settings
from scanflow_agents.clients import Client
from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.transports.servers import NatsServer

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "scanflow-agents"
AGENTS = ("checker", "improver", "planner", "tracker")
READY_WITHIN = 180.0


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def render(helm: str, release: str, image: str, nats: str, mlflow: str) -> list[dict[str, Any]]:
    repository, _, tag = image.rpartition(":")
    ports = {agent: free_port() for agent in AGENTS}
    options = {
        "image.repository": repository,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "nats.url": nats,
        "mlflow.trackingUri": mlflow,
        # No Secrets exist here; the chart's tests check how they are referenced.
        "nats.existingSecret.name": "",
        "mlflow.existingSecret.name": "",
        "envFromSecret": "",
        # No API server either: the planner runs workflows as local processes.
        "agents.planner.config.platform": "local",
        "agents.planner.kubernetesApi": "false",
        "serviceAccount.create": "false",
        "shutdownTimeout": "10",
        **{f"agents.{agent}.httpPort": str(port) for agent, port in ports.items()},
    }
    command = [helm, "template", release, str(CHART), "--namespace", "agents"]
    command += ["--values", str(CHART / "ci" / "application-values.yaml")]
    for key, value in options.items():
        command += ["--set", f"{key}={value}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"helm template failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def for_podman(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two podman 4.3 adjustments described in the module docstring."""
    played = []
    for doc in docs:
        doc = json.loads(json.dumps(doc))
        if doc["kind"] in ("Deployment", "Pod"):
            spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
            own = doc["metadata"]["name"]
            renamed = {}
            for volume in spec.get("volumes", []):
                if "emptyDir" in volume:
                    renamed[volume["name"]] = f"{own}-{volume['name']}"
                    volume["name"] = renamed[volume["name"]]
            for container in spec["containers"]:
                container.pop("ports", None)
                for mount in container.get("volumeMounts", []):
                    mount["name"] = renamed.get(mount["name"], mount["name"])
        played.append(doc)
    return played


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (named,) = [p for p in container["ports"] if p["name"] == port]
    return int(named["containerPort"])


def started_at(name: str) -> float:
    return int(podman("inspect", name, "--format", "{{.State.StartedAt.UnixNano}}")) / 1e9


def logs(name: str) -> str:
    # The agents log to stderr; podman passes the container's streams on as they are.
    done = subprocess.run(["podman", "logs", name], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def rss_mib(name: str) -> float:
    """Resident memory of the container's main process (VmRSS, read on the host)."""
    pid = podman("inspect", name, "--format", "{{.State.Pid}}").strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise ValueError(f"no VmRSS for {name} (pid {pid})")


async def call_planner(nats: str, namespace: str) -> Any:
    settings = Settings.load(namespace=namespace, nats={"url": nats})
    async with Client.connect(settings) as client:
        return await client.call("planner", "status", workflow="serve", timeout=60)


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def wait_ready(deployments: dict[str, Any], names: dict[str, str]) -> dict[str, float]:
    """Poll each readiness probe; seconds from each container's start to its first 200."""
    ready_after: dict[str, float] = {}
    deadline = time.monotonic() + READY_WITHIN
    while len(ready_after) < len(names) and time.monotonic() < deadline:
        for agent in sorted(set(names) - set(ready_after)):
            probe = container_of(deployments[agent])["readinessProbe"]
            port = probe_port(container_of(deployments[agent]), probe)
            if get(port, probe["httpGet"]["path"])[0] == 200:
                ready_after[agent] = round(time.time() - started_at(names[agent]), 2)
        time.sleep(0.1)
    late = sorted(set(names) - set(ready_after))
    for agent in late:
        print(logs(names[agent]), file=sys.stderr)
    if late:
        raise SystemExit(f"not ready within {READY_WITHIN:.0f} s: {late}")
    return ready_after


def check_alive_and_measured(deployments: dict[str, Any]) -> None:
    for agent, deployment in deployments.items():
        container = container_of(deployment)
        port = probe_port(container, container["livenessProbe"])
        status, body = get(port, container["livenessProbe"]["httpGet"]["path"])
        assert status == 200, f"liveness of {agent}: {status} {body}"
        metrics = get(port, "/metrics")[1]
        assert f'scanflow_agent_ready{{agent="{agent}"}} 1.0' in metrics, metrics


def check_security(deployments: dict[str, Any], names: dict[str, str]) -> None:
    """The rendered security context is what the containers run with."""
    for agent, name in names.items():
        seen = json.loads(podman("inspect", name))[0]
        assert seen["HostConfig"]["ReadonlyRootfs"] is True, agent
        assert seen["Config"]["User"] == "10001:10001", seen["Config"]["User"]
        assert "no-new-privileges" in seen["HostConfig"]["SecurityOpt"], agent
        limit = container_of(deployments[agent])["resources"]["limits"]["memory"]
        assert seen["HostConfig"]["Memory"] == _bytes(limit), (agent, limit)
        denied = subprocess.run(
            ["podman", "exec", name, "touch", "/opt/venv/x"], capture_output=True, check=False
        )
        assert denied.returncode != 0, f"{agent} could write to its root filesystem"
        podman("exec", name, "touch", "/tmp/scratch")  # the emptyDir is writable


def run_helm_test(test_file: Path, release: str) -> list[str]:
    """Play the chart's test pod; it must exit 0 having listed every agent."""
    podman("kube", "play", "--network", "host", str(test_file), timeout=300)
    name = f"{release}-scanflow-agents-test-agents"
    code = podman("wait", name, timeout=120).strip()
    output = logs(name)
    assert code == "0", f"the helm test pod failed ({code}):\n{output}"
    assert set(AGENTS) <= {line.split()[0] for line in output.splitlines() if line.strip()}
    return output.strip().splitlines()


def check_sigterm(deployments: dict[str, Any], names: dict[str, str]) -> dict[str, float]:
    """``podman stop`` (SIGTERM, then SIGKILL after the grace period): each exits 0 in time."""
    took: dict[str, float] = {}
    for agent, name in names.items():
        grace = deployments[agent]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        began = time.monotonic()
        podman("stop", "--time", str(grace), name, timeout=grace + 30)
        took[agent] = round(time.monotonic() - began, 2)
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").strip()
        output = logs(name)
        assert code == "0", f"{agent} exited {code} on SIGTERM:\n{output[-3000:]}"
        assert took[agent] < grace, f"{agent} took {took[agent]} s to stop (grace {grace} s)"
        assert f"agent '{agent}' stopped" in output, output[-3000:]
    return took


def clean_up(release: str, files: list[Path]) -> None:
    for file in files:
        if file.exists():
            podman("kube", "down", str(file), check=False)
    volumes = podman("volume", "ls", "--format", "{{.Name}}", check=False).split()
    mine = [v for v in volumes if v.startswith(release)]
    if mine:
        podman("volume", "rm", "--force", *mine, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--helm", required=True)
    options = parser.parse_args()
    release = f"ci-{uuid.uuid4().hex[:6]}"
    report: dict[str, Any] = {"release": release}

    with (
        tempfile.TemporaryDirectory(prefix="scanflow-pods-") as folder,
        NatsServer() as nats_server,
        MlflowServer() as mlflow_server,
    ):
        docs = render(options.helm, release, options.image, nats_server.url, mlflow_server.url)
        config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
        settings = next(c for c in config_maps if "settings.yaml" in c["data"])
        namespace = yaml.safe_load(settings["data"]["settings.yaml"])["namespace"]
        deployments = {
            d["metadata"]["labels"]["scanflow.io/agent"]: d
            for d in docs
            if d["kind"] == "Deployment"
        }
        assert sorted(deployments) == sorted(AGENTS), sorted(deployments)
        test_pod = next(d for d in docs if d["kind"] == "Pod")
        agents_file, test_file = Path(folder) / "agents.yaml", Path(folder) / "test.yaml"
        played = for_podman([*config_maps, *deployments.values()])
        agents_file.write_text(yaml.safe_dump_all(played))
        test_file.write_text(yaml.safe_dump_all(for_podman([*config_maps, test_pod])))
        names = {agent: f"{release}-scanflow-agents-{agent}-pod-0-agent" for agent in AGENTS}
        try:
            podman("kube", "play", "--network", "host", str(agents_file), timeout=300)
            report["seconds_from_start_to_ready"] = wait_ready(deployments, names)
            check_alive_and_measured(deployments)
            check_security(deployments, names)
            report["helm_test_output"] = run_helm_test(test_file, release)
            report["planner_status"] = asyncio.run(call_planner(nats_server.url, namespace))
            assert report["planner_status"]["workflow"] == "serve", report["planner_status"]
            time.sleep(3)  # idle: nothing to do but heartbeats and sensor polls
            report["idle_rss_mib"] = {agent: rss_mib(name) for agent, name in names.items()}
            report["seconds_to_exit_on_sigterm"] = check_sigterm(deployments, names)
        finally:
            clean_up(release, [test_file, agents_file])
    print(json.dumps(report, indent=2, default=str))
    return 0


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(float(quantity[: -len(unit)]) * factor)
    return int(quantity)


if __name__ == "__main__":
    sys.exit(main())
