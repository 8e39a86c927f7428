"""Predicted vs measured throughput for every calibration point.

    python -m launcher.estimate.calibrate            # markdown table + error summary
    python -m launcher.estimate.calibrate --json

"fit" error: the model fitted on all fit points. "held-out" error: for a fit point, the model
refitted without that point (leave-one-out); for a check point (never fitted) the plain
prediction. The held-out column is the honest measure of how the model does on a new case.
"""

from __future__ import annotations

import json
import statistics
import sys

from launcher.estimate.calibration import Point, build, load_points
from launcher.estimate.flops import model_cost
from launcher.estimate.throughput import predict


def _predict(point: Point, cal, get_gpu) -> float:
    gpu = get_gpu(point.gpu)
    cost = model_cost(point.model, point.image_size, point.num_classes, point.in_channels, allow_torch=False)
    return predict(gpu, point.count, point.precision, cost, point.batch_size, point.model, cal).samples_per_second


def error_table(points: list[Point] | None = None, get_gpu=None) -> list[dict]:
    if get_gpu is None:
        from launcher.catalog.gpus import get_gpu
    points = load_points() if points is None else points
    full = build(points, get_gpu)
    rows = []
    for p in points:
        try:
            fitted = _predict(p, full, get_gpu)
            held = fitted if p.role != "fit" else _predict(p, build(points, get_gpu, exclude=p), get_gpu)
        except Exception:
            continue
        rows.append({
            "gpu": p.gpu, "count": p.count, "model": p.model, "precision": p.precision,
            "batch_size": p.batch_size, "measured": p.samples_per_second, "role": p.role, "source": p.source,
            "predicted_fit": round(fitted, 1), "predicted_held_out": round(held, 1),
            "error_fit": round(fitted / p.samples_per_second - 1, 4),
            "error_held_out": round(held / p.samples_per_second - 1, 4), "note": p.note,
        })
    return rows


def summary(rows: list[dict]) -> dict:
    def stats(key: str) -> dict:
        errs = [abs(r[key]) for r in rows if r["role"] != "variant"]
        if not errs:
            return {"median": None, "max": None, "n": 0}
        return {"median": round(statistics.median(errs), 4), "max": round(max(errs), 4), "n": len(errs)}

    return {"fit": stats("error_fit"), "held_out": stats("error_held_out")}


def markdown(rows: list[dict]) -> str:
    out = ["| GPU | n | model | precision | batch | measured img/s | predicted (fit) | error | "
           "predicted (held out) | error | role | source |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['gpu']} | {r['count']} | {r['model']} | {r['precision']} | {r['batch_size']} | "
                   f"{r['measured']:.0f} | {r['predicted_fit']:.0f} | {r['error_fit']:+.1%} | "
                   f"{r['predicted_held_out']:.0f} | {r['error_held_out']:+.1%} | {r['role']} | {r['source']} |")
    s = summary(rows)
    out.append("")
    out.append(f"Absolute error over {s['fit']['n']} points (variants excluded): fit median {s['fit']['median']:.1%}, "
               f"max {s['fit']['max']:.1%}; held out median {s['held_out']['median']:.1%}, "
               f"max {s['held_out']['max']:.1%}.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = error_table()
    if "--json" in argv:
        sys.stdout.write(json.dumps({"rows": rows, "summary": summary(rows)}, indent=1) + "\n")
    else:
        sys.stdout.write(markdown(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
