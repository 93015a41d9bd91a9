"""The README documents every setting and the commands CI runs."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from service.config import ServiceConfig

ROOT = Path(__file__).parent.parent


def test_every_setting_has_a_row_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in fields(ServiceConfig) if f"| `{f.name}` |" not in readme]
    assert not missing, f"settings missing from the README table: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / "README.md").read_text()
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
