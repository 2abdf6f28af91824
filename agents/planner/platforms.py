"""Making the platform the planner executes on, and closing it.

The local platform is always there. The Kubernetes one is imported only when
asked for, so a planner on a laptop needs neither the Kubernetes client nor
its adapter; if it is asked for and cannot be imported, the planner does not
start and says why.
"""

from __future__ import annotations

import importlib
from typing import Any

from scanflow_agents.builtin.planner.settings import PlannerSettings

from scanflow_agents.platforms import Platform, RunStore
from scanflow_agents.platforms.local import LocalPlatform, LocalPlatformSettings, RunCallback
from scanflow_agents.settings import Settings

KUBERNETES_MODULE = "scanflow_agents.platforms.kubernetes"


class PlatformUnavailable(RuntimeError):
    """The configured platform cannot be created; the message says what to do."""


def make_platform(
    settings: Settings,
    options: PlannerSettings,
    on_run_finished: RunCallback,
    store: RunStore | None = None,
) -> Platform:
    """The platform ``options.platform`` names, reporting finished runs to ``on_run_finished``.

    Runs are kept in ``store`` (the planner's JetStream key-value one), so a
    restarted planner finds them.

    Raises:
        PlatformUnavailable: The Kubernetes platform is asked for but cannot be imported
            or does not offer what the planner needs.
    """
    if options.platform == "local":
        local = LocalPlatformSettings.from_settings(settings, **options.local.model_dump())
        return LocalPlatform(local, on_run_finished=on_run_finished, store=store)
    return _kubernetes(settings, options, on_run_finished, store)


def _kubernetes(
    settings: Settings, options: PlannerSettings, on_run_finished: RunCallback, store: Any
) -> Platform:
    hint = (
        "set SCANFLOW_AGENTS__PLANNER__PLATFORM=local, or install the Kubernetes platform "
        "(pip install 'scanflow-agents[kubernetes]')"
    )
    try:
        module = importlib.import_module(KUBERNETES_MODULE)
    except ImportError as exc:
        raise PlatformUnavailable(
            f"planner: platform 'kubernetes' is not available: cannot import "
            f"{KUBERNETES_MODULE} ({exc}); {hint}"
        ) from exc
    platform_class = getattr(module, "KubernetesPlatform", None)
    settings_class = getattr(module, "KubernetesPlatformSettings", None)
    if platform_class is None or settings_class is None:
        raise PlatformUnavailable(
            f"planner: platform 'kubernetes' is not available: {KUBERNETES_MODULE} has no "
            f"KubernetesPlatform and KubernetesPlatformSettings; {hint}"
        )
    platform_settings = settings_class.from_settings(settings, **options.kubernetes)
    platform: Platform = platform_class(
        platform_settings, on_run_finished=on_run_finished, store=store
    )
    return platform
