"""`gpujob show RUN --plot FILE.png`: estimate vs actual, and GPU vs the local CPU, as a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.errors import UsageError


def plot_report(report: dict[str, Any], path: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib", "pip install 'gpujob[plot]'") from None
    est, act = report.get("estimate", {}), report.get("actual", {})
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    pairs = [("time (min)", (est.get("total_seconds") or 0) / 60, (act.get("total_seconds") or 0) / 60),
             ("cost ($)", est.get("usd") or 0, act.get("usd") or 0)]
    for ax, (label, e, a) in zip(axes[:2], pairs):
        ax.bar(["estimate", "actual"], [e, a], color=["#9ab", "#246"])
        ax.set_title(label)
    vs = report.get("vs_cpu")
    ax = axes[2]
    if vs:
        ax.bar(["this CPU", report.get("machine", {}).get("gpu") or report.get("provider")],
               [vs["cpu_seconds"] / 3600, (act.get("train_seconds") or 0) / 3600], color=["#b96", "#246"])
        ax.set_title(f"training hours (speedup {vs['speedup']:.1f}x)")
    else:
        ax.text(0.5, 0.5, "no CPU baseline recorded", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(f"run {report['run_id']} {report['name']} ({report['state']})")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
