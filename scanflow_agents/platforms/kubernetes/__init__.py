"""The Kubernetes platform: Deployments, Services, Jobs or Argo Workflows, BuildKit builds.

Importing this package is light: the ``kubernetes`` client (the
``kubernetes`` extra) is imported when the platform first talks to a cluster.
"""

from scanflow_agents.platforms.kubernetes.building import ImageBuildResult
from scanflow_agents.platforms.kubernetes.client import KubeClient
from scanflow_agents.platforms.kubernetes.deploying import ApplicationDeployResult
from scanflow_agents.platforms.kubernetes.platform import KubernetesPlatform
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings, PodEnv
from scanflow_agents.platforms.runs import RunCallback

__all__ = [
    "ApplicationDeployResult",
    "ImageBuildResult",
    "KubeClient",
    "KubernetesPlatform",
    "KubernetesPlatformSettings",
    "PodEnv",
    "RunCallback",
]
