"""Per-round metrics of a federation: one JSON object per line (a row per client per round, `"client"` set, and a
summary row per round, `"summary": true`), and a PNG plot of them (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["append_rows", "plot_metrics", "read_rows"]


def append_rows(path: Path, rows: list[Mapping[str, Any]]) -> None:
    """Append rows (NaN written as null: strict JSON) and flush, so a crash keeps the rounds done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            f.write(json.dumps(clean, sort_keys=True) + "\n")


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_metrics(jsonl: Path, png: Path) -> Path:
    """Held-out top-1 after local training and the last training loss, per client and round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_rows(jsonl) if r.get("client") and r.get("status") == "used"]
    fig, (ax_top1, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for client in sorted({r["client"] for r in rows}):
        mine = sorted((r for r in rows if r["client"] == client), key=lambda r: r["round"])
        label = f"{client} ({mine[0].get('profile', '?')}, r{mine[0].get('rank', '?')})"
        rounds = [r["round"] for r in mine]
        line, = ax_top1.plot(rounds, [_num(r.get("top1-after")) for r in mine], marker="o", label=label)
        ax_top1.plot(rounds, [_num(r.get("top1-before")) for r in mine], ls=":", color=line.get_color())
        ax_loss.plot(rounds, [_num(r.get("loss-last")) for r in mine], marker="o", label=label)
    ax_top1.set(title="held-out top-1 (solid: after local training, dotted: start of round)", xlabel="round",
                ylabel="top-1")
    ax_loss.set(title="training loss (last steps)", xlabel="round", ylabel="loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_top1, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")
