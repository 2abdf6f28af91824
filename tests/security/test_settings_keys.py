"""Settings refuse keys that no section has, and say which key and where it came from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scanflow_agents import Settings
from scanflow_agents.settings import UnknownSetting


def test_a_typo_in_the_environment_is_named_with_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCANFLOW_NATS__PASSWROD", "hunter22")
    with pytest.raises(UnknownSetting) as caught:
        Settings.load()
    assert str(caught.value).startswith(
        "unknown setting nats.passwrod (from the environment variable SCANFLOW_NATS__PASSWROD)"
    )
    assert "did you mean nats.password?" in str(caught.value)
    assert "hunter22" not in str(caught.value)


def test_nested_sections_and_unknown_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCANFLOW_AGENT__HANDLERS__TIMEOUTT", "3")
    with pytest.raises(UnknownSetting, match=r"unknown setting agent\.handlers\.timeoutt"):
        Settings.load()
    monkeypatch.delenv("SCANFLOW_AGENT__HANDLERS__TIMEOUTT")
    monkeypatch.setenv("SCANFLOW_NAT__URL", "nats://x:4222")
    with pytest.raises(
        UnknownSetting,
        match=r"unknown setting nat\.url \(from the environment.*did you mean nats\.url\?",
    ):
        Settings.load()


def test_known_keys_free_agent_sections_and_other_variables_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCANFLOW_NATS__CREDS", "/etc/nats/planner.creds")
    monkeypatch.setenv("SCANFLOW_AGENT__HANDLERS__TIMEOUT", "3")
    monkeypatch.setenv("SCANFLOW_AGENT__ALLOW__SCALE", "improver,client")
    # Each agent validates its own section: any key is fine here.
    monkeypatch.setenv("SCANFLOW_AGENTS__PLANNER__ANY_KEY_AT_ALL", "local")
    # Not settings by form (no section delimiter): workflow steps read these.
    monkeypatch.setenv("SCANFLOW_RUN_DIR", "/tmp/run")
    file = tmp_path / "settings.yaml"
    file.write_text("agents:\n  checker:\n    thresholds: {psi: 0.2}\n")
    settings = Settings.load(str(file))
    assert settings.nats.creds == "/etc/nats/planner.creds"
    assert settings.agent.handlers.timeout == 3
    assert settings.agent.allow == {"scale": ["improver", "client"]}
    assert settings.agents == {
        "planner": {"any_key_at_all": "local"},
        "checker": {"thresholds": {"psi": 0.2}},
    }


def test_a_file_and_the_command_line_are_named_too(tmp_path: Path) -> None:
    file = tmp_path / "settings.yaml"
    file.write_text("mlflow:\n  tracking_uri: http://m:5000\n  pasword: x\n")
    with pytest.raises(UnknownSetting) as caught:
        Settings.load(str(file))
    assert str(caught.value).startswith(
        f"unknown setting mlflow.pasword (from the settings file {file})"
    )
    with pytest.raises(UnknownSetting, match=r"nats\.urll \(from the command line\)"):
        Settings.load(nats={"urll": "nats://x"})


def test_sections_built_directly_refuse_unknown_keys_as_well() -> None:
    from pydantic import ValidationError

    from scanflow_agents.settings import NatsSettings

    with pytest.raises(ValidationError, match="passwrod"):
        NatsSettings(passwrod="x")  # type: ignore[call-arg]


def test_the_cli_says_it_before_connecting(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scanflow_agents.runtime", "agents"],
        env={"SCANFLOW_NATS__PASSWROD": "hunter22", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert (
        "unknown setting nats.passwrod (from the environment variable SCANFLOW_NATS__PASSWROD)"
        in done.stderr
    )
    assert "hunter22" not in done.stderr + done.stdout
