"""Rendering of `gpujob gpus`: plain data from launcher.catalog.listing -> rich tables."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from launcher.render import fitted, fmt_usd


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pair(p: dict) -> str:
    od, spot = p.get("on_demand"), p.get("spot")
    return f"{_num(od)}/{_num(spot)}" if spot is not None else _num(od)


def _footer(con, prov: dict[str, Any], shown_reference: bool) -> None:
    if shown_reference:
        con.print(f"* {escape(prov['reference_note'])}")
    stale = " [yellow](old: run `gpujob catalog update`)[/]" if prov.get("stale") else ""
    con.print(f"source {escape(prov['source'])}, snapshot {prov['snapshot']}, "
              f"{prov['age_days']:.0f} days old{stale}")


def render_gpus(con, result: dict[str, Any]) -> None:
    """One row per GPU: memory, peak bf16, cheapest on-demand / spot $ per GPU-hour per provider."""
    from launcher.catalog.reference import is_reference

    rows = result["rows"]
    providers = [p for p in ("aws", "gcp", "azure", "lambda", "vast") if any(p in r["prices"] for r in rows)]
    t = Table(show_edge=False, header_style="bold")
    t.add_column("GPU", overflow="fold")  # a long name wraps, not cut, when the table is narrowed
    t.add_column("GiB", justify="right")
    t.add_column("BF16 TF", justify="right")
    for p in providers:
        t.add_column(f"{p}{'*' if is_reference(p) else ''}", justify="right")
    t.add_column("REGIONS", justify="right")
    for r in rows:
        t.add_row(escape(r["gpu"]), f"{r['memory_gib']:.0f}" if r["memory_gib"] else "-",
                  f"{r['bf16_tflops']:.0f}" if r["bf16_tflops"] else "-",
                  *[_pair(r["prices"][p]) if p in r["prices"] else "" for p in providers], str(r["regions"]))
    con.print(fitted(con, t))
    con.print(f"{len(rows)} GPU models: GiB and peak dense bf16 TFLOP/s per GPU; per provider the cheapest "
              "$ per GPU-hour, on-demand/spot; `gpujob gpus NAME` lists every offer")
    _footer(con, result["provenance"], any(is_reference(p) for p in providers))


def render_gpu_offers(con, result: dict[str, Any]) -> None:
    """Every offer of one GPU: instance type, count, region, machine and per-GPU prices."""
    offers = result["offers"]
    t = Table(show_edge=False, header_style="bold")
    for col in ("PROVIDER", "INSTANCE", "GPU", "N", "REGION", "$/H", "SPOT $/H", "$/GPU-H"):
        t.add_column(col, justify="right" if col.startswith(("$", "SPOT", "N")) else "left", overflow="fold")
    for o in offers:
        t.add_row(o["provider"] + ("" if o["launchable"] else "*"), escape(o["instance_type"]), escape(o["gpu"]),
                  str(o["gpu_count"]), escape(o["region"]), fmt_usd(o["price"]), fmt_usd(o["spot_price"]),
                  fmt_usd(o["price_per_gpu"]))
    con.print(fitted(con, t))
    con.print(f"{len(offers)} offers of {escape(str(result['gpu']))}")
    _footer(con, result["provenance"], any(not o["launchable"] for o in offers))
