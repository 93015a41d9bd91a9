"""Plots and a Markdown summary of capacity searches, the load's view beside the server's."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt


def write_report(results: dict, out_dir: Path) -> list[Path]:
    """Writes the PNG plots and summary.md into out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        _plot_latency(results, out_dir / "latency_vs_streams.png"),
        _plot_throughput(results, out_dir / "throughput_vs_streams.png"),
        _plot_batch_sizes(results, out_dir / "batch_sizes.png"),
    ]
    summary = out_dir / "summary.md"
    summary.write_text(_markdown(results))
    return [*paths, summary]


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _plot_latency(results: dict, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    for index, configuration in enumerate(results["configurations"]):
        streams = [step["streams"] for step in configuration["steps"]]
        color = f"C{index}"
        for percentile, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            values = [step["client"]["latency_ms"][percentile] for step in configuration["steps"]]
            axes.plot(streams, values, style, color=color, marker="o",
                      label=f"{configuration['name']} {percentile}")  # fmt: skip
    axes.axhline(results["objective"]["p99_ms"], color="red", linewidth=1, label="p99 objective")
    axes.set(xlabel="concurrent streams", ylabel="latency from scheduled send (ms)",
             title=f"Latency against streams at {results['fps']:g} FPS each")  # fmt: skip
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    return _save(figure, path)


def _plot_throughput(results: dict, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    largest = 1
    for index, configuration in enumerate(results["configurations"]):
        streams = [step["streams"] for step in configuration["steps"]]
        served = [s["client"]["fps_per_stream"] * s["streams"] for s in configuration["steps"]]
        axes.plot(streams, served, marker="o", color=f"C{index}", label=configuration["name"])
        largest = max(largest, *streams)
    axes.plot([0, largest], [0, largest * results["fps"]], "k:", label="every frame served")
    axes.set(xlabel="concurrent streams", ylabel="masks served per second",
             title="Throughput against streams")  # fmt: skip
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _last_held(configuration: dict) -> dict:
    held = [step for step in configuration["steps"] if step["passed"]]
    return held[-1] if held else configuration["steps"][-1]


def _plot_batch_sizes(results: dict, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    configurations = [c for c in results["configurations"] if _last_held(c).get("server")]
    width = 0.8 / max(len(configurations), 1)
    # Buckets up to the largest that any configuration used.
    used = [
        i
        for c in configurations
        for i, count in enumerate(_last_held(c)["server"]["batch_sizes"].values())
        if count
    ]
    shown = max(used, default=0) + 1
    for index, configuration in enumerate(configurations):
        step = _last_held(configuration)
        buckets = dict(list(step["server"]["batch_sizes"].items())[:shown])
        total = sum(step["server"]["batch_sizes"].values()) or 1
        labels = list(buckets)
        positions = [i + index * width for i in range(len(labels))]
        axes.bar(positions, [buckets[label] / total for label in labels], width,
                 label=f"{configuration['name']} ({step['streams']} streams)")  # fmt: skip
        axes.set_xticks([i + width * (len(configurations) - 1) / 2 for i in range(len(labels))])
        axes.set_xticklabels([f"<={label}" for label in labels], fontsize=8)
    axes.set(xlabel="frames in a batch (bucket)", ylabel="share of batches",
             title="Batch sizes at the largest load that held (server metrics)")  # fmt: skip
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _markdown(results: dict) -> str:
    objective = results["objective"]
    lines = [
        "# Capacity of one replica",
        "",
        f"{results['fps']:g} FPS per stream, {results['resolution']} frames; objective: p99 "
        f"latency at most {objective['p99_ms']:g} ms from the scheduled send, at most "
        f"{objective['max_drop_ratio']:.0%} of frames dropped, no errors, no call refused and "
        f"no stream reconnected. Machine: "
        f"{results['machine']}. Each step held {results['hold_s']:g} s after a "
        f"{results['warm_up_s']:g} s warm-up.",
        "",
        "| configuration | server flags | calls per replica |",
        "| --- | --- | --- |",
    ]
    for configuration in results["configurations"]:
        flags = " ".join(configuration["server_flags"]) or "(defaults)"
        lines.append(f"| {configuration['name']} | `{flags}` | {configuration['capacity']} |")
    by_name = {c["name"]: c["capacity"] for c in results["configurations"]}
    if results.get("comparisons"):
        lines += ["", "| comparison | ratio |", "| --- | --- |"]
        for label, (a, b) in results["comparisons"].items():
            ratio = by_name[a] / by_name[b] if by_name.get(b) else float("nan")
            lines.append(f"| {label} | {by_name.get(a)} / {by_name.get(b)} = {ratio:.2f} |")
    for configuration in results["configurations"]:
        lines += [
            "",
            f"## {configuration['name']}",
            "",
            "| streams | p50 ms (load / server) | p99 ms (load / server) | fps per stream | "
            "dropped (load / server) | mean batch (server) | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for step in configuration["steps"]:
            client, server = step["client"], step.get("server") or {}
            server_latency = server.get("latency_ms", {})
            lines.append(
                f"| {step['streams']} | {client['latency_ms']['p50']:.1f} / "
                f"{server_latency.get('p50', float('nan')):.1f} | "
                f"{client['latency_ms']['p99']:.1f} / {server_latency.get('p99', float('nan')):.1f}"
                f" | {client['fps_per_stream']:.1f} | {client['dropped']} / "
                f"{server.get('frames_dropped', float('nan')):.0f} | "
                f"{server.get('mean_batch_size', float('nan')):.1f} | "
                f"{'PASS' if step['passed'] else 'FAIL'}: {step['why']} |"
            )
    lines += [
        "",
        "The load's latency runs from each frame's scheduled send time to its answer (queueing "
        "in the client, the network and the server included); the server's runs from the "
        "frame's arrival to its answer, estimated from its histogram buckets. Load counts cover "
        "the measured window; server counts cover the whole step, ramp-up and warm-up included.",
        "",
        "![latency](latency_vs_streams.png)",
        "![throughput](throughput_vs_streams.png)",
        "![batch sizes](batch_sizes.png)",
        "",
    ]
    return "\n".join(lines)


def load_results(paths: list[Path]) -> dict:
    """Merges result files (each from `capacity`/`compare`) into one."""
    merged: dict | None = None
    for path in paths:
        results = json.loads(path.read_text())
        if merged is None:
            merged = results
        else:
            merged["configurations"] += results["configurations"]
    assert merged is not None, "no result files"
    return merged
