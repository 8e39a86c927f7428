"""Rendering of `gpujob cost`: plain data from launcher.costs -> rich tables."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from launcher.render import fmt_pct, fmt_seconds, fmt_usd, narrowed, too_wide


def render_cost(con, rep: dict[str, Any]) -> None:
    runs = rep["runs"]
    span = f"the last {rep['days']:g} days" if rep.get("days") else "all time"
    if not runs:
        con.print(("no runs yet" if not rep.get("days") else f"no runs in {span}")
                  + ": try `gpujob run jobs/quickstart.yaml`")
        return
    t = Table(show_edge=False, header_style="bold", title=f"runs, {span}", title_justify="left")
    for col in ("run", "name", "provider", "GPU", "state", "est. time", "time", "err", "est. $", "$", "err"):
        t.add_column(col, justify="right" if col in ("est. time", "time", "err", "est. $", "$") else "left",
                     no_wrap=col != "name", overflow="fold")  # narrowed: the name wraps, the rest is kept
    for r in runs:
        t.add_row(r["run_id"], escape(r["name"]), r["provider"], escape(r["gpu"]), r["state"],
                  fmt_seconds(r["estimated_seconds"]), fmt_seconds(r["actual_seconds"]), fmt_pct(r["seconds_error_pct"]),
                  fmt_usd(r["estimated_usd"]), fmt_usd(r["actual_usd"]), fmt_pct(r["usd_error_pct"]))
    narrow = too_wide(con, t)  # then every table of the report in the narrow style
    con.print(narrowed(t) if narrow else t)
    for key, title in (("provider", "per provider"), ("gpu", "per GPU"), ("month", "per month")):
        tt = Table(show_edge=False, header_style="bold", title=title, title_justify="left")
        for col in (key, "runs", "time", "$", "estimated $"):
            tt.add_column(col, justify="left" if col == key else "right")
        for g in rep["totals"][key]:
            tt.add_row(escape(str(g[key])), str(g["runs"]), fmt_seconds(g["actual_seconds"]),
                       fmt_usd(g["actual_usd"]), fmt_usd(g["estimated_usd"]))
        con.print(narrowed(tt) if narrow else tt)
    con.print(f"total {fmt_usd(rep['total_usd'])} over {len(runs)} run(s), {span}")
    con.print(f"[bold]{escape(rep['track_record']['sentence'])}[/]")
