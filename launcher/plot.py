"""`gpujob show RUN --plot FILE.png`: estimate vs actual, and GPU vs the local CPU, as a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.errors import UsageError


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds < 600:
        return "s", 1.0
    if seconds < 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def plot_report(report: dict[str, Any], path: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib", "pip install 'gpujob[plot]'") from None
    est, act = report.get("estimate", {}), report.get("actual", {})
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    colors = ["#9ab", "#246"]

    t_est, t_act = est.get("total_seconds") or 0, act.get("total_seconds") or 0
    unit, div = _time_unit(max(t_est, t_act))
    axes[0].bar(["estimate", "actual"], [t_est / div, t_act / div], color=colors)
    axes[0].set_title(f"total time ({unit})")

    u_est, u_act = est.get("usd") or 0, act.get("usd") or 0
    if u_est or u_act:
        axes[1].bar(["estimate", "actual"], [u_est, u_act], color=colors)
        axes[1].set_title("cost ($)")
    else:
        axes[1].text(0.5, 0.5, "$0: nothing was rented", ha="center", va="center")
        axes[1].set_axis_off()

    ax = axes[2]
    vs, base = report.get("vs_cpu"), report.get("baseline") or {}
    if vs:
        cpu_s, run_s = vs["cpu_seconds"], act.get("train_seconds") or 0
        unit, div = _time_unit(max(cpu_s, run_s))
        label = report.get("machine", {}).get("gpu") or report.get("provider")
        ax.bar(["this CPU", label], [cpu_s / div, run_s / div], color=["#b96", "#246"])
        ax.set_title(f"training time ({unit}); speedup {vs['speedup']:.1f}x")
    elif base.get("samples_per_second") and act.get("samples_per_second"):
        ax.bar(["CPU probe" if base.get("measured") else "CPU model", "run"], [base["samples_per_second"], act["samples_per_second"]],
               color=["#b96", "#246"])
        ax.set_title("samples/s (the run itself was on the CPU)")
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
