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


def test_the_readme_defaults_are_the_config_defaults() -> None:
    readme = (ROOT / "README.md").read_text()
    defaults = ServiceConfig.from_args([], environ={})
    for setting in fields(ServiceConfig):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{setting.name}` |"))
        documented = row.split("|")[2].strip()
        value = getattr(defaults, setting.name)
        if documented == "CPU count" or setting.name == "model_dir":
            continue  # machine-dependent
        if documented == "empty":
            assert value == "", setting.name
            continue
        shown = documented.split("`")[1]
        if isinstance(value, bool):
            expected = "true" if value else "false"
        elif isinstance(value, tuple):
            expected = ",".join(map(str, value))
        elif isinstance(value, float):
            expected = f"{value:g}"
        else:
            expected = str(value)
        assert shown == expected, f"{setting.name}: README says {shown}, the config {expected}"
