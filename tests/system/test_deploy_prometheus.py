"""The Prometheus configuration, rules and Grafana dashboard under deploy/ are valid.

promtool checks the configuration and the rule files and runs the rule unit tests in
deploy/prometheus/tests/. The dashboard may only query the recording rules and the metrics of
service/metrics.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RECORDING = PROMETHEUS / "rules" / "recording.yml"
ALERTS = PROMETHEUS / "rules" / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "segmentation-dashboard.json"

# The metrics of service/metrics.py, as Prometheus stores them.
COUNTERS = ("segmentation_frames", "segmentation_received_bytes", "segmentation_sent_bytes")
HISTOGRAMS = (
    "segmentation_stage_duration_seconds",
    "segmentation_frame_latency_seconds",
    "segmentation_batch_size",
    "segmentation_batch_fill_ratio",
)
GAUGES = (
    "segmentation_active_streams",
    "segmentation_frames_waiting",
    "segmentation_batches_in_flight",
    "segmentation_stream_frames_per_second",
    "segmentation_stream_latency_seconds",
    "segmentation_streams_unreported",
)
INFOS = ("segmentation_model",)
SERVICE_METRICS = frozenset(
    [f"{name}_total" for name in COUNTERS]
    + [f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")]
    + list(GAUGES)
    + [f"{name}_info" for name in INFOS]
)
# Standard collectors, and the scrape health Prometheus records itself.
OTHER_METRIC_PREFIXES = ("process_", "python_")
OTHER_METRICS = frozenset({"up"})

PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: install Prometheus (Debian/Ubuntu: "
            "`apt-get install prometheus`, which `make test` does)"
        )
    return path


def run_promtool(promtool: str, *args: str | Path) -> str:
    result = subprocess.run(
        [promtool, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def recorded_names() -> list[str]:
    return re.findall(r"^\s*- record:\s*(\S+)\s*$", RECORDING.read_text(), re.MULTILINE)


def alert_blocks() -> dict[str, str]:
    parts = re.split(r"^\s*- alert:\s*", ALERTS.read_text(), flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def metric_names(expr: str) -> set[str]:
    """The metric and recording rule names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings first: they may hold braces
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )  # label lists
    names = set()
    # Whole identifiers, not part of a number or $variable, not called like a function.
    for match in re.finditer(r"(?<![\w:$.])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()", expr):
        if match.group().lower() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def is_allowed(name: str, recorded: set[str]) -> bool:
    return (
        name in recorded
        or name in SERVICE_METRICS
        or name in OTHER_METRICS
        or name.startswith(OTHER_METRIC_PREFIXES)
    )


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [
        target["expr"]
        for panel in dashboard_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            # Grafana's label_values(series, label): the series part is PromQL.
            label_values = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
            exprs.append(label_values.group(1) if label_values else query)
    return exprs


# --- promtool -------------------------------------------------------------------------------


def test_promtool_checks_the_config_and_the_rule_files_it_loads(promtool: str) -> None:
    output = run_promtool(promtool, "check", "config", CONFIG)
    assert "2 rule files found" in output


def test_promtool_checks_both_rule_files(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", RECORDING, ALERTS)
    assert f"{len(recorded_names())} rules found" in output
    assert f"{len(alert_blocks())} rules found" in output


@pytest.mark.parametrize("rule_test", RULE_TESTS, ids=lambda path: path.name)
def test_promtool_rule_unit_tests_pass(promtool: str, rule_test: Path) -> None:
    run_promtool(promtool, "test", "rules", rule_test)


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    rules = tmp_path / "dashboard-queries.yml"
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for index, expr in enumerate(exprs):
        promql = expr.replace("$instance", ".*")
        lines += [f"      - record: dashboard_query_{index}", f"        expr: {json.dumps(promql)}"]
    rules.write_text("\n".join(lines) + "\n")
    run_promtool(promtool, "check", "rules", rules)


# --- rules ----------------------------------------------------------------------------------


def test_the_header_lists_exactly_the_recording_rules() -> None:
    header = RECORDING.read_text().split("\ngroups:", 1)[0]
    listed = re.findall(r"^#\s+([a-z_]+:[a-z_]+:[a-z0-9_]+)\s*$", header, re.MULTILINE)
    assert listed == recorded_names()


def test_recording_rules_follow_the_naming_convention() -> None:
    names = recorded_names()
    assert len(names) == len(set(names)), "a recording rule is defined twice"
    for name in names:
        level, metric, operations = name.split(":")
        assert level.split("_")[0] in ("instance", "job"), name
        assert metric.startswith("segmentation_"), name
        assert operations, name
    # Every per-replica rule has its all-replicas twin.
    per_replica = {name.split(":", 1)[1] for name in names if name.startswith("instance")}
    overall = {name.split(":", 1)[1] for name in names if name.startswith("job")}
    assert per_replica == overall


def test_alerts_have_severity_annotations_and_a_duration() -> None:
    alerts = alert_blocks()
    assert set(alerts) == {
        "SegmentationNoReadyReplica",
        "SegmentationInternalErrors",
        "SegmentationLatencyHigh",
        "SegmentationFramesDropped",
        "SegmentationReplicaSaturated",
    }
    for name, block in alerts.items():
        assert re.search(r"^\s+severity: (critical|warning)$", block, re.MULTILINE), name
        assert re.search(r"^\s+summary: ", block, re.MULTILINE), name
        assert re.search(r"^\s+description: ", block, re.MULTILINE), name
        assert re.search(r"^\s+for: \d+m$", block, re.MULTILINE), name


def test_every_alert_is_unit_tested() -> None:
    tested = set()
    for rule_test in RULE_TESTS:
        tested |= set(re.findall(r"alertname:\s*(\w+)", rule_test.read_text()))
    assert set(alert_blocks()) <= tested


def test_every_recording_rule_is_unit_tested() -> None:
    tests = "\n".join(rule_test.read_text() for rule_test in RULE_TESTS)
    untested = [name for name in recorded_names() if f"expr: {name}" not in tests]
    assert not untested, f"recording rules without a promql_expr_test: {untested}"


def test_the_listed_metrics_are_those_of_the_service() -> None:
    source = (ROOT / "service" / "metrics.py").read_text()
    for name in (*COUNTERS, *HISTOGRAMS, *GAUGES, *INFOS):
        assert f'"{name}"' in source, f"{name} is no longer a metric of service/metrics.py"


# --- dashboard ------------------------------------------------------------------------------


def test_dashboard_is_json_with_the_datasource_and_instance_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    panels = list(dashboard_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_queries_only_recording_rules_and_service_metrics() -> None:
    recorded = set(recorded_names())
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        unknown = sorted(name for name in names if not is_allowed(name, recorded))
        assert not unknown, f"{expr!r} queries {unknown}: neither recorded nor a service metric"
        used |= names
    # The panels are built on the recording rules.
    assert len(used & recorded) >= len(recorded) // 2


def test_metric_names_parses_promql() -> None:
    expr = (
        'sum by (reason) (rate(segmentation_frames_total{outcome="error", reason=~"a|}"}[1m]))'
        ' / on (job) group_left instance:segmentation_frames_ok:rate1m{instance=~"$instance"}'
        " > bool 1e3 offset 5m or histogram_quantile(0.99, x_bucket)"
    )
    assert metric_names(expr) == {
        "segmentation_frames_total",
        "instance:segmentation_frames_ok:rate1m",
        "x_bucket",
    }
