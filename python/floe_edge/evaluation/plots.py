"""PNG plots of an evaluation result (matplotlib, the `bench` / `test` extras): accuracy per system and task,
latency against RTT, accuracy against the static fusion weight, bytes per query."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

__all__ = ["write_plots"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'floe-edge[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt: Any, fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, legend: int = 7, ncol: int = 1) -> None:
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend, ncol=ncol, loc="upper center" if ncol > 1 else "best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _accuracy(plt: Any, systems: Mapping[str, Any], path: Path) -> None:
    tasks = list(dict.fromkeys(t for s in systems.values() for t in s["by_task"]))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(len(systems), 1)
    for i, (name, s) in enumerate(systems.items()):
        values = [s["by_task"].get(t, {}).get("top1") or 0 for t in tasks] + [s.get("top1") or 0]
        ax.bar([x + i * width for x in range(len(tasks) + 1)], values, width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(tasks) + 1)], [*tasks, "all"])
    ax.set_ylim(0, 120)  # room for the legend above the bars
    _finish(plt, fig, ax, path, "", "teacher-forced top-1 (%)", ncol=4)


def _latency(plt: Any, systems: Mapping[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in systems.items():
        points = sorted((float(r), v) for r, v in s.get("latency_by_rtt_p50_ms", {}).items() if v is not None)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    _finish(plt, fig, ax, path, "round-trip time (ms)", "answer latency p50 (ms)")


def _weights(plt: Any, result: Mapping[str, Any], path: Path) -> None:
    sweep = {float(w): v for w, v in result.get("static_weight_sweep", {}).items() if v is not None}
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(sweep), list(sweep.values()), marker="o", label="static log-linear")
    for name, style in (("floe-adaptive", "--"), ("floe-gate", "-."), ("oracle", ":")):
        top1 = result["systems"].get(name, {}).get("top1")
        if top1 is not None:
            ax.axhline(top1, linestyle=style, label=name, color="gray" if name == "oracle" else None)
    _finish(plt, fig, ax, path, "cloud weight (0: edge alone, 1: cloud)", "teacher-forced top-1 (%)")


def _bytes(plt: Any, systems: Mapping[str, Any], path: Path) -> None:
    names = [n for n, s in systems.items() if "kb_per_query" in s]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, [systems[n]["kb_up_per_query"] for n in names], label="up")
    ax.bar(names, [systems[n]["kb_down_per_query"] for n in names],
           bottom=[systems[n]["kb_up_per_query"] for n in names], label="down")
    ax.tick_params(axis="x", labelrotation=30)
    _finish(plt, fig, ax, path, "", "KB per query", legend=9)


def write_plots(result: Mapping[str, Any], out_dir: Path, prefix: str = "eval") -> list[Path]:
    """Write the four plots into out_dir; returns their paths."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    systems = result["systems"]
    paths = [out_dir / f"{prefix}_{name}.png" for name in ("accuracy", "latency", "weights", "bytes")]
    _accuracy(plt, systems, paths[0])
    _latency(plt, systems, paths[1])
    _weights(plt, result, paths[2])
    _bytes(plt, systems, paths[3])
    return paths
