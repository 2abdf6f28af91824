"""The local platform: batch steps as subprocesses, services as replica processes.

Nothing heavy is imported here: model servers are separate processes.
"""

from scanflow_agents.platforms.local.platform import LocalPlatform
from scanflow_agents.platforms.local.settings import LocalPlatformSettings
from scanflow_agents.platforms.runs import RunCallback

__all__ = ["LocalPlatform", "LocalPlatformSettings", "RunCallback"]
