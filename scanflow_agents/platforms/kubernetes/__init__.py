"""The Kubernetes platform: Deployments, Services, Jobs or Argo Workflows, Kaniko builds.

Importing this package is light: the ``kubernetes`` client (the
``kubernetes`` extra) is imported when the platform first talks to a cluster.
"""

from scanflow_agents.platforms.base import RunCallback
from scanflow_agents.platforms.kubernetes.building import ImageBuildResult
from scanflow_agents.platforms.kubernetes.client import KubeClient
from scanflow_agents.platforms.kubernetes.deploying import ApplicationDeployResult
from scanflow_agents.platforms.kubernetes.platform import KubernetesPlatform
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings

__all__ = [
    "ApplicationDeployResult",
    "ImageBuildResult",
    "KubeClient",
    "KubernetesPlatform",
    "KubernetesPlatformSettings",
    "RunCallback",
]
