"""``scanflow check``: the planner's preflight, run from anywhere against a kubeconfig.

The same checks the planner runs at start (:mod:`scanflow_agents.platforms.kubernetes.checking`),
with the planner's settings (``--settings``, as the chart writes them) and,
with ``--as``, the planner's own account: a platform engineer sees what the
planner would miss before installing it, or why a running one is not ready.
"""

from __future__ import annotations

import click
from scanflow_agents.runtime.commanding import run_coroutine, settings_of

PLATFORM_HINT = "set agents.planner.platform: kubernetes in the settings file"


@click.command()
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file.")
@click.option("--context", help="Kubeconfig context (default: the current one).")
@click.option(
    "--as",
    "impersonate",
    metavar="USER",
    help="Check as this user, e.g. system:serviceaccount:mlops:agents-scanflow-agents "
    "(the planner's account; needs the right to impersonate).",
)
@click.pass_context
def check(
    ctx: click.Context, kubeconfig: str | None, context: str | None, impersonate: str | None
) -> None:
    """Check what the planner needs on its cluster: namespaces, permissions, Argo's account.

    Prints each missing piece with the command that fixes it, and exits 1 if
    anything is missing.
    """
    from scanflow_agents.platforms.kubernetes import KubernetesPlatform, KubernetesPlatformSettings

    settings = settings_of(ctx)
    # The planner's section as the planner reads it (its platform and the
    # platform's options); the runtime does not import the built-in agents.
    section = settings.agent_config("planner")
    platform_name = section.get("platform", "local")
    if platform_name != "kubernetes":
        raise click.ClickException(f"the planner's platform is {platform_name}; {PLATFORM_HINT}")
    given = {"kubeconfig": kubeconfig, "context": context, "impersonate": impersonate}
    local: dict[str, str | None] = {k: v for k, v in given.items() if v is not None}
    if kubeconfig or context:
        local["host"] = None  # A kubeconfig names the cluster: not the settings' host.
    try:
        platform_settings = KubernetesPlatformSettings.from_settings(
            settings, **{**dict(section.get("kubernetes") or {}), **local}
        )
    except ValueError as exc:
        raise click.ClickException(f"bad Kubernetes settings: {exc}") from exc

    async def go() -> list[str]:
        async with KubernetesPlatform(platform_settings) as platform:
            return await platform.preflight()

    missing = run_coroutine(go)
    for problem in missing:
        click.echo(f"missing: {problem}")
    if missing:
        ctx.exit(1)
    teams = ", ".join(platform_settings.teams or (platform_settings.team,))
    click.echo(f"ok: the planner has what it needs (teams: {teams})")
