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
- the model server's Deployment that the planner makes for the application
  (its command, environment, credentials, mounts and security context, as
  ``platforms/kubernetes/manifests.py`` builds it from the settings the chart
  gives the planner) runs from the same image, loads the registered model from
  MLflow, answers predictions, and its serving report reaches the agents'
  telemetry stream through a NATS that requires a user and password;
- SIGTERM (``podman stop`` with the pod's grace period) drains each agent and
  the model server, and each exits 0 in time.

NATS runs with authorization on: the agents, the helm test pod and the model
server take the user and password from the Secret the chart names
(``scanflow-nats``), as they would on a cluster.

It prints the time from container start to ready and the memory of each idle
container, and what the model server's first report carried. Four changes
are made to the rendered objects, all for podman 4.3 and none to what the pods
run: container ``ports`` are dropped (podman refuses port mappings on the host
network; each pod has its own port), each Deployment's emptyDir gets a name of
its own (podman maps an emptyDir to a named volume, which pods with the same
volume name would share), an environment variable taken from a Secret or from
the pod's name gets its value (podman has no Secrets of the cluster to read),
and ``$(VAR)`` in a command or its arguments is expanded as the kubelet does.

Not proven here: scheduling, RBAC enforcement, Services and network policies,
probes run by a real kubelet, rolling updates.

Usage: python .ci/check_pods.py --image localhost/scanflow-agents:ci \
    --serving-image localhost/scanflow-agents-serving:ci --helm PATH
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
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
from scanflow_agents.builtin.planner.settings import PlannerSettings

from scanflow_agents import Settings
from scanflow_agents.clients import Client
from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.platforms.kubernetes import KubernetesPlatformSettings
from scanflow_agents.platforms.kubernetes.manifests import (
    SERVING_CONTAINER,
    service_deployment,
    service_name,
)
from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.serving.reporting import subject as report_subject
from scanflow_agents.transports.connecting import open_connection
from scanflow_agents.transports.servers import NatsServer
from scanflow_agents.workflows.nodes import ServiceNode

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "scanflow-agents"
AGENTS = ("checker", "improver", "planner", "tracker")
READY_WITHIN = 180.0
# The Secret application-values.yaml names for NATS, and what a cluster would hold in it.
NATS_SECRET = "scanflow-nats"
# The application of application-values.yaml: its online workflow's node and model.
TEAM, WORKFLOW, NODE, MODEL_URI = "vision", "serve", "model", "models:/digits@production"
DIGITS = ROOT / "tests" / "support" / "digits_models.py"


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


def render(
    helm: str,
    release: str,
    images: tuple[str, str],
    nats: str,
    mlflow: str,
    *,
    on_cluster: bool = False,
) -> list[dict[str, Any]]:
    """The chart's objects with ``images`` (the agent's, the serving one); ``on_cluster``
    keeps the planner on the Kubernetes platform (for the settings it would build model
    servers with), else it runs steps locally."""
    repository, _, tag = images[0].rpartition(":")
    serving_repository, _, serving_tag = images[1].rpartition(":")
    ports = {agent: free_port() for agent in AGENTS}
    options = {
        "image.repository": repository,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "kubernetes.images.serving.repository": serving_repository,
        "kubernetes.images.serving.tag": serving_tag,
        "nats.url": nats,
        "mlflow.trackingUri": mlflow,
        # NATS's Secret is kept (its values are given to the pods, see for_podman);
        # MLflow runs here without authentication and no object store is used.
        "mlflow.existingSecret.name": "",
        "envFromSecret": "",
        # No API server either: the planner runs workflows as local processes.
        "agents.planner.config.platform": "kubernetes" if on_cluster else "local",
        "agents.planner.kubernetesApi": str(on_cluster).lower(),
        "serviceAccount.create": str(on_cluster).lower(),
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


def for_podman(
    docs: list[dict[str, Any]], secrets: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    """The three podman 4.3 adjustments described in the module docstring."""
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
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    if ref is not None:
                        variable.pop("valueFrom")
                        variable["value"] = secret_value(secrets, own, ref)
                    field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                    if field == "metadata.name":
                        variable.pop("valueFrom")
                        variable["value"] = pod_name(doc)
                expand_references(container)
        played.append(doc)
    return played


def pod_name(doc: dict[str, Any]) -> str:
    """The name podman gives the (first) pod of a Deployment, or a Pod's own."""
    name = doc["metadata"]["name"]
    return f"{name}-pod-0" if doc["kind"] == "Deployment" else name


def expand_references(container: dict[str, Any]) -> None:
    """``$(VAR)`` in command and args becomes the variable's value, as the kubelet does."""
    values = {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}
    for key in ("command", "args"):
        words = container.get(key)
        if words:
            container[key] = [
                re.sub(r"\$\((\w+)\)", lambda m: values.get(m[1], m[0]), w) for w in words
            ]


def secret_value(secrets: dict[str, dict[str, str]], pod: str, ref: dict[str, str]) -> str:
    """What a kubelet would read; a reference to a missing Secret fails as the pod would."""
    try:
        return secrets[ref["name"]][ref["key"]]
    except KeyError:
        raise SystemExit(
            f"{pod} takes key {ref['key']!r} of Secret {ref['name']!r}, which the cluster "
            "would not hold (CreateContainerConfigError)"
        ) from None


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


async def call_planner(settings: Settings) -> Any:
    async with Client.connect(settings) as client:
        return await client.call("planner", "status", workflow=WORKFLOW, timeout=60)


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


def model_server_deployment(settings_yaml: str, port: int) -> dict[str, Any]:
    """The Deployment the planner makes for the application's model, from the chart's settings.

    The planner container runs here on the local platform (there is no API
    server); the settings are those the chart renders for a planner on the
    Kubernetes platform, so the pod is what the planner would make on a cluster.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(settings_yaml)
        file.flush()
        settings = Settings.load(file.name)
    options = PlannerSettings.from_settings(settings)
    platform = KubernetesPlatformSettings.from_settings(settings, **options.kubernetes)
    platform = platform.model_copy(update={"serving_port": port})
    node = ServiceNode(name=NODE, model_uri=MODEL_URI, replicas=1)
    deployment: dict[str, Any] = service_deployment(platform, TEAM, WORKFLOW, node, "digits")
    return deployment


def register_digits(mlflow_url: str) -> list[list[float]]:
    """Register the digits models (alias production) as a user would; returns test rows."""
    done = subprocess.run(
        [sys.executable, str(DIGITS), mlflow_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"registering the digits models failed:\n{done.stderr[-3000:]}")
    rows: list[list[float]] = json.loads(done.stdout.strip().splitlines()[-1])["rows"]
    return rows


async def first_report(settings: Settings, port: int, rows: list[list[float]]) -> dict[str, Any]:
    """Predict, then wait for the replica's report on NATS and in the telemetry stream."""
    nc = await open_connection(settings.nats, name="check-pods")
    try:
        config = ServingConfig(
            model_uri=MODEL_URI, namespace=settings.namespace, workflow=WORKFLOW, node=NODE
        )
        subject = report_subject(config)
        reports = await nc.subscribe(subject)
        for _ in range(5):
            status, body = await asyncio.to_thread(post, port, "/predict", {"instances": rows})
            assert status == 200, f"prediction failed: {status} {body}"
        began = time.monotonic()
        while True:
            # Reports come every report_interval (10 s); the first may precede our requests.
            message = await reports.next_msg(timeout=60)
            report = json.loads(message.data)["payload"]
            if report.get("requests", 0) > 0:
                break
        waited = round(time.monotonic() - began, 2)
        # The replica is named after its pod, as the kubelet expands $(POD_NAME).
        assert report["replica"] == f"{service_name(WORKFLOW, NODE)}-pod-0", report["replica"]
        info = await nc.jetstream().stream_info(
            settings.telemetry_stream_name, subjects_filter=subject
        )
        stored = int(info.state.messages)
        assert stored > 0, f"the telemetry stream holds no report on {subject}"
    finally:
        await nc.close()
    return {
        "subject": subject,
        "replica": report["replica"],
        "requests": report["requests"],
        "rows": report["rows"],
        "bytes": len(message.data),
        "seconds_after_predictions": waited,
        "stored_in_telemetry_stream": stored,
    }


def post(port: int, path: str, body: Any) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def run_model_server(
    deployment: dict[str, Any], folder: str, secrets: dict[str, dict[str, str]]
) -> tuple[str, Path]:
    """Play the model server's Deployment; its container's name and the played file."""
    file = Path(folder) / "model-server.yaml"
    file.write_text(yaml.safe_dump_all(for_podman([deployment], secrets)))
    podman("kube", "play", "--network", "host", str(file), timeout=300)
    return f"{deployment['metadata']['name']}-pod-0-{SERVING_CONTAINER}", file


def wait_serving(name: str, port: int) -> float:
    """Seconds from the model server's start to its first healthy answer (model loaded)."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if get(port, "/health")[0] == 200:
            return round(time.time() - started_at(name), 2)
        time.sleep(0.2)
    print(logs(name), file=sys.stderr)
    raise SystemExit(f"the model server was not healthy within {READY_WITHIN:.0f} s")


def stop_model_server(name: str, deployment: dict[str, Any]) -> float:
    grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    began = time.monotonic()
    podman("stop", "--time", str(grace), name, timeout=grace + 30)
    took = round(time.monotonic() - began, 2)
    code = podman("inspect", name, "--format", "{{.State.ExitCode}}").strip()
    assert code == "0", f"the model server exited {code} on SIGTERM:\n{logs(name)[-3000:]}"
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
    parser.add_argument("--image", required=True, help="the agent image")
    parser.add_argument("--serving-image", required=True, help="the serving image")
    parser.add_argument("--helm", required=True)
    options = parser.parse_args()
    release = f"ci-{uuid.uuid4().hex[:6]}"
    report: dict[str, Any] = {"release": release}

    credentials = {"user": "scanflow", "password": uuid.uuid4().hex}
    secrets = {NATS_SECRET: credentials}
    with (
        tempfile.TemporaryDirectory(prefix="scanflow-pods-") as folder,
        NatsServer(config=nats_config(folder, credentials)) as nats_server,
        MlflowServer() as mlflow_server,
    ):
        images = (options.image, options.serving_image)
        docs = render(options.helm, release, images, nats_server.url, mlflow_server.url)
        config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
        settings_yaml = next(c for c in config_maps if "settings.yaml" in c["data"])
        settings_yaml = settings_yaml["data"]["settings.yaml"]
        namespace = yaml.safe_load(settings_yaml)["namespace"]
        client_settings = Settings.load(
            namespace=namespace, nats={"url": nats_server.url, **credentials}
        )
        rows = register_digits(mlflow_server.url)
        # The model server as the planner on a cluster would make it.
        on_cluster = render(
            options.helm, release, images, nats_server.url, mlflow_server.url, on_cluster=True
        )
        planner_settings = next(
            d["data"]["settings.yaml"]
            for d in on_cluster
            if d["kind"] == "ConfigMap" and "settings.yaml" in d["data"]
        )
        serving_port = free_port()
        server = model_server_deployment(planner_settings, serving_port)
        # The chart's serving image reaches the planner's model servers.
        containers = server["spec"]["template"]["spec"]["containers"]
        served = next(c for c in containers if c["name"] == SERVING_CONTAINER)
        assert served["image"] == options.serving_image, served
        server_file = Path(folder) / "model-server.yaml"
        deployments = {
            d["metadata"]["labels"]["scanflow.io/agent"]: d
            for d in docs
            if d["kind"] == "Deployment"
        }
        assert sorted(deployments) == sorted(AGENTS), sorted(deployments)
        test_pod = next(d for d in docs if d["kind"] == "Pod")
        agents_file, test_file = Path(folder) / "agents.yaml", Path(folder) / "test.yaml"
        played = for_podman([*config_maps, *deployments.values()], secrets)
        agents_file.write_text(yaml.safe_dump_all(played))
        test_file.write_text(yaml.safe_dump_all(for_podman([*config_maps, test_pod], secrets)))
        names = {agent: f"{release}-scanflow-agents-{agent}-pod-0-agent" for agent in AGENTS}
        try:
            podman("kube", "play", "--network", "host", str(agents_file), timeout=300)
            report["seconds_from_start_to_ready"] = wait_ready(deployments, names)
            check_alive_and_measured(deployments)
            check_security(deployments, names)
            report["helm_test_output"] = run_helm_test(test_file, release)
            report["planner_status"] = asyncio.run(call_planner(client_settings))
            assert report["planner_status"]["workflow"] == WORKFLOW, report["planner_status"]
            time.sleep(3)  # idle: nothing to do but heartbeats and sensor polls
            report["idle_rss_mib"] = {agent: rss_mib(name) for agent, name in names.items()}
            serving, server_file = run_model_server(server, folder, secrets)
            report["model_server"] = {
                "seconds_from_start_to_healthy": wait_serving(serving, serving_port),
                "first_report": asyncio.run(first_report(client_settings, serving_port, rows)),
                "rss_mib": rss_mib(serving),
                "seconds_to_exit_on_sigterm": stop_model_server(serving, server),
            }
            report["seconds_to_exit_on_sigterm"] = check_sigterm(deployments, names)
        finally:
            clean_up(release, [test_file, agents_file, server_file])
    print(json.dumps(report, indent=2, default=str))
    return 0


def nats_config(folder: str, credentials: dict[str, str]) -> str:
    """A nats-server configuration that requires the user and password."""
    path = Path(folder) / "nats.conf"
    user, password = credentials["user"], credentials["password"]
    path.write_text(f'authorization {{\n  user: "{user}"\n  password: "{password}"\n}}\n')
    return str(path)


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(float(quantity[: -len(unit)]) * factor)
    return int(quantity)


if __name__ == "__main__":
    sys.exit(main())
