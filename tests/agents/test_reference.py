"""The committed settings reference is the one the settings models generate."""

from __future__ import annotations

from pathlib import Path

import pytest
from scanflow_agents.builtin import reference


def test_the_committed_reference_matches_the_settings_models() -> None:
    # On a difference: python -m scanflow_agents.builtin.reference
    assert reference.DEFAULT_PATH.read_text() == reference.render()


def test_the_check_fails_on_a_stale_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "SETTINGS.md"
    stale.write_text(reference.render().replace("margin", "edge"))
    assert reference.main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().out
    assert reference.main([str(stale)]) == 0  # regenerated
    assert reference.main(["--check", str(stale)]) == 0


def test_every_setting_has_a_meaning() -> None:
    rows = [line for line in reference.render().splitlines() if line.startswith("| `agents.")]
    assert len(rows) > 50
    assert all(not line.rstrip().endswith("|  |") for line in rows), [
        line for line in rows if line.rstrip().endswith("|  |")
    ]
