"""Rendering for the CLI: rich tables on a terminal, plain lines otherwise, JSON lines on request.

Everything here takes plain data (dicts, records) produced by the core and writes to the
console the CLI hands in.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.1f}m"
    if s < 2 * 86400:
        return f"{s / 3600:.1f}h"
    if s < 2 * 365 * 86400:
        return f"{s / 86400:.1f}d"
    return f"{s / (365 * 86400):.1f}y"


def fmt_usd(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:,.2f}" if x >= 0.01 or x == 0 else f"${x:.4f}"


def fmt_rate(x: float) -> str:
    """Samples/s: whole numbers from 10 up, two significant digits below (0.93, not 1)."""
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def fmt_flops(x: float | None) -> str:
    """FLOPs with a unit that keeps 2-4 significant digits: 812.5 MFLOP, 92.6 GFLOP, 1.2 TFLOP."""
    if not x:
        return "-"
    for div, unit in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{x:.0f} FLOP"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0f}%"


def _band(fraction: float | None) -> str:
    """' (±15%)' after an estimated total that carries an error band, else nothing."""
    return f" (±{fraction:.0%})" if fraction else ""


# --- estimate ------------------------------------------------------------------------------


def _print_bands(con, candidates: list, per: str = "sample") -> None:
    """One line per error-band basis shown, and one per earlier run of this job on a shown GPU."""
    bands: dict[str, list[float]] = {}
    for c in candidates:
        if c.get("error_band") is not None and c.get("band_basis"):
            bands.setdefault(c["band_basis"], []).append(c["error_band"])
    for basis, vals in bands.items():
        _print_note(con, f"±{max(vals):.0%} ({basis})", label=f"{per}s/s", style="")
    labels = {f"{c['gpu']} x{c['gpu_count']}: {c['measured']['label']}" for c in candidates if c.get("measured")}
    for label in sorted(labels):
        con.print(f"[cyan]{escape(label)}[/]")


def render_estimate(con, est: dict[str, Any], wide: bool = False) -> None:
    """The estimate: one line per row at 80 columns (``wide``: every column), then notes and footer."""
    job = est.get("job", {})
    per = "token" if job.get("seq_len") else "sample"  # a language model counts tokens
    _print_parts(con, f"[bold]{escape(job.get('name', ''))}[/]:", [
        f"{escape(str(job.get('model')))} {job.get('precision')}", f"batch {job.get('batch_size')}",
        f"{job.get('total_samples', 0):,} {per}s", f"{fmt_flops(job.get('train_flops_per_sample'))}/{per} (train)"])
    (_wide_table if wide else _narrow_table)(con, est)
    _estimate_footer(con, est, wide)


def _print_parts(con, head: str, parts: list[str]) -> None:
    """``head`` then ``parts`` joined by ", ", broken between parts (never inside one) when the
    line is wider than the console; continuation lines are indented by two spaces."""
    from rich.text import Text

    lines, line = [], head
    for i, part in enumerate(parts):
        piece = (" " if i == 0 else ", ") + part
        more = i < len(parts) - 1  # room for the "," that ends the line if the next part breaks
        if Text.from_markup(line + piece.rstrip()).cell_len + more > con.width:  # the first part too
            lines.append(line + ("," if i else ""))
            line = "  " + part
            continue
        line += piece
    for text in [*lines, line]:
        con.print(text, overflow="fold")


def _print_note(con, note: str, label: str = "note:", style: str = "yellow") -> None:
    """``note: ...`` broken between words at the console's width, continuation lines indented
    under the text (at 80 columns a 121-character note read as two notes, the second unlabelled)."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style=style, no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(label, escape(note))
    con.print(grid)


# Flags after the provider in the narrow table; the legend under it names those present.
_FLAGS = (("$", "over the budget"), ("!", "does not fit the GPU memory (--wide or memory plan)"))


def _flags(c: dict[str, Any]) -> str:
    return ("$" if c.get("over_budget") else "") + ("" if c.get("fits_memory", True) else "!")


def _free_name(name: str) -> str:
    """'Kaggle Notebooks (GPU T4 x2)' -> 'Kaggle': the GPU column says the rest."""
    return name.split(" (")[0].removesuffix(" Notebooks")


def _narrow_table(con, est: dict[str, Any]) -> None:
    """Provider, instance type, region, GPU x count, market, total time, total $: one line per row.

    One table per section (the spec's own offers, cheaper alternatives), then this machine and
    the free tiers for comparison; all share the column widths so they line up.
    """
    groups: list[tuple[str | None, list[tuple[list[str], str | None]]]] = []
    sections, section = est.get("sections") or {}, object()
    for c in est.get("candidates", []):
        if c.get("section", "requested") != section:
            section = c.get("section", "requested")
            groups.append((sections.get(section), []))
        nodes, flags = c.get("num_nodes") or 1, _flags(c)
        groups[-1][1].append(([c["provider"] + flags, c["instance_type"] + (f" x{nodes}" if nodes > 1 else ""),
                               c["region"], f"{c['gpu']} x{c['gpu_count']}", "spot" if c["spot"] else "on-demand",
                               fmt_seconds(c.get("total_seconds")), fmt_usd(c.get("total_usd"))],
                              "dim" if flags else None))
    compare: list[tuple[list[str], str | None]] = []
    b = est.get("baseline") or {}
    if b:
        compare.append((["local", "this machine", "-", f"CPU x{b['cores']}" if b.get("cores") else "CPU", "-",
                         fmt_seconds(b.get("seconds")), "$0.00"], "cyan"))
    for f in est.get("free_options", []):
        fits = f.get("fits_memory", True)
        compare.append((["free" + ("" if fits else "!"), _free_name(f["name"]), "-", f"{f['gpu']} x{f['gpu_count']}",
                         "free tier", fmt_seconds(f.get("train_seconds")), "$0.00"], "green" if fits else "dim"))
    if compare:
        over = [_free_name(f["name"]) for f in est.get("free_options", []) if not f.get("fits_one_session")]
        # their "total" is training alone: no machine to start, no payload to ship (a free
        # notebook's own start is the user's), unlike the cloud rows' start-up included above
        groups.append(("for comparison, training only, not launch targets"
                       + (f" (over one free session: {', '.join(dict.fromkeys(over))})" if over else ""), compare))
    headers = ("provider", "instance", "region", "GPU", "market", "total", "total $")
    rows = [r for _, g in groups for r, _ in g]
    width = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    cut = _fit_reference_rows(rows, headers, width, con.width - (len(headers) - 1))
    tight = sum(width) + 2 * (len(width) - 1) > con.width
    for n, (title, group) in enumerate(groups):
        if title:
            con.print(f"[bold]{escape(title)}[/]")
        # SIMPLE_HEAD draws a one-space divider between columns; the right padding adds a second.
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False,
                  padding=0 if tight else (0, 1, 0, 0), show_header=n == 0)
        for i, h in enumerate(headers):
            t.add_column(h, justify="right" if i >= 5 else "left", no_wrap=True, overflow="ellipsis",
                         min_width=width[i])
        for cells, style in group:
            t.add_row(*(escape(x) for x in cells), style=style)
        con.print(t)
    flagged = [_flags(c) for c in est.get("candidates", [])] + ["" if f.get("fits_memory", True) else "!"
                                                                 for f in est.get("free_options", [])]
    marks = [f"{m} {what}" for m, what in _FLAGS if any(m in flags for flags in flagged)]
    if cut:
        marks.append("… cut to fit: " + "/".join(cut) + " offers (estimate only; --wide for full names)")
    if marks:
        budget = (est.get("job") or {}).get("budget_usd")
        con.print(escape("  ".join(marks).replace("over the budget", f"over the ${budget:g} budget" if budget
                                                   else "over the budget")))


_LAUNCHABLE = ("aws", "gcp", "ssh", "local", "free")


def _fit_reference_rows(rows: list[list[str]], headers, width: list[int], room: int) -> list[str]:
    """Shorten instance, region and GPU cells of estimate-only clouds (Azure, Lambda, Vast) to fit.

    Rows of providers gpujob launches on keep every cell in full: a column never shrinks below
    their longest cell. Edits ``rows`` and ``width`` in place; returns the providers whose cells were cut.
    """
    floor = {i: max([len(headers[i])] + [len(r[i]) for r in rows if r[0].rstrip("$!") in _LAUNCHABLE])
             for i in (1, 2, 3)}
    while sum(width) > room:
        i = max(floor, key=lambda k: width[k] - floor[k])
        if width[i] <= floor[i]:
            break
        width[i] -= 1
    cut = []
    for r in rows:
        for i in floor:
            if len(r[i]) > width[i]:
                name, _, count = r[i].rpartition(" x")
                if i == 3 and name and count.isdigit() and width[i] - len(count) - 3 >= 1:
                    r[i] = f"{name[:width[i] - len(count) - 3]}… x{count}"  # the count stays: "RTX-A60… x2"
                else:
                    r[i] = r[i][:width[i] - 1] + "…"
                cut.append(r[0].rstrip("$!"))
    return list(dict.fromkeys(cut))


_WIDE_COLUMNS = (("provider", "left"), ("instance", "left"), ("region", "left"), ("GPU", "left"),
                 ("market", "left"), ("$/h", "right"), ("samples/s", "right"), ("GPU eff.", "right"),
                 ("train", "right"), ("overhead", "right"), ("total", "right"), ("total $", "right"),
                 ("$/epoch", "right"), ("note", "left"))


def _wide_table(con, est: dict[str, Any]) -> None:
    """Every column: $/h, samples/s, GPU efficiency, train and overhead time, $/epoch, notes.
    On a terminal narrower than that table, each row as two lines instead (``_wide_records``)."""
    groups: list[tuple[str | None, list[tuple[list[str], str | None]]]] = []  # one per section
    sections, section = est.get("sections") or {}, None
    for c in est.get("candidates", []):
        if not groups or c.get("section", "requested") != section:  # one labelled table per section
            section = c.get("section", "requested")
            groups.append((escape(sections[section]) if section in sections else None, []))
        notes = []
        if not c.get("fits_memory", True):
            notes.append("too few GPUs (memory plan below)" if c.get("memory") else
                         f"batch too big (max {c.get('max_batch')})")
        elif (c.get("memory") or {}).get("parallel") == "fsdp":
            notes.append("FSDP" + (" + checkpointing" if c["memory"]["checkpointing"] else ""))
        if c.get("over_budget"):
            notes.append("over budget")
        if c.get("requested"):
            notes.append("requested")
        if c.get("measured"):
            notes.append("measured before")
        if c.get("launchable") is False:
            notes.append("estimate only")
        style = "dim" if notes and not c.get("requested") else None
        nodes = c.get("num_nodes") or 1
        eff = c.get("scaling_efficiency")
        groups[-1][1].append(([c["provider"], c["instance_type"] + (f" x{nodes}" if nodes > 1 else ""), c["region"],
                               f"{c['gpu']} x{c['gpu_count']}", "spot" if c["spot"] else "on-demand",
                               fmt_usd(c.get("price_per_hour")),
                               f"{c['samples_per_second']:,.0f}" if c.get("samples_per_second") else "-",
                               f"{eff:.0%}" if eff is not None else "-",
                               fmt_seconds(c.get("train_seconds")), fmt_seconds(c.get("overhead_seconds")),
                               fmt_seconds(c.get("total_seconds")), fmt_usd(c.get("total_usd")),
                               fmt_usd(c.get("usd_per_epoch")), ", ".join(notes)], style))
    if not groups:
        groups.append((None, []))
    rows = groups[-1][1]
    b = est.get("baseline") or {}
    if b:
        sps = b.get("samples_per_second")
        band = f" ±{b['error_band']:.0%}" if b.get("error_band") and not b.get("measured") else ""
        rows.append((["local", "this machine", "-", escape(str(b.get("device", "CPU"))), "-", "$0.00",
                      f"{sps:,.1f}" if sps else "-", "-", fmt_seconds(b.get("seconds")), "-",
                      fmt_seconds(b.get("seconds")), "$0.00", "$0.00",
                      "measured" if b.get("measured") else f"modelled{band} (not measured)"], "cyan"))
    for f in est.get("free_options", []):
        rows.append((["free", escape(f["name"]), "-", f"{f['gpu']} x{f['gpu_count']}", "-", "$0.00",
                      f"{f['samples_per_second']:,.0f}" if f.get("samples_per_second") else "-", "-",
                      fmt_seconds(f.get("train_seconds")), "-", "-", "$0.00", "$0.00",
                      ("fits one session" if f.get("fits_one_session") else
                       f"exceeds a {f.get('max_session_hours')}h session") + " (not a launch target)"], "green"))
    tables = []
    for title, group in groups:
        t = Table(show_edge=False, header_style="bold", title=title, title_justify="left", title_style="bold")
        for col, just in _WIDE_COLUMNS:
            t.add_column(col, justify=just)
        for cells, style in group:
            t.add_row(*cells, style=style)
        tables.append(t)
    if any(too_wide(con, t, at_least=True) for t in tables):
        _wide_records(con, groups)
        return
    for t in tables:
        con.print(t)


def _wide_records(con, groups: list[tuple[str | None, list[tuple[list[str], str | None]]]]) -> None:
    """--wide where its 14 columns cannot fit (at 80 columns every cell was cut to "…"): each row
    as the offer, then its figures packed into lines under a two-space indent, never split."""
    for title, rows in groups:
        if title:
            con.print(f"[bold]{title}[/]")
        for cells, style in rows:
            what = " ".join(x for x in cells[:3] if x != "-") + f": {cells[3]}" + (
                f", {cells[4]}" if cells[4] != "-" else "") + (f"; {cells[13]}" if cells[13] else "")
            price, sps, eff, train, over, total, usd, epoch = cells[5:13]
            figures = [x for x, v in ((f"{price}/h", price), (f"{sps} samples/s", sps), (f"GPU eff. {eff}", eff),
                                      (f"train {train}", train), (f"overhead {over}", over),
                                      (f"total {total}", total), (f"{usd} in all", usd),
                                      (f"{epoch}/epoch", epoch)) if v != "-"]
            con.print(what, style=style or "")
            line = ""
            for part in figures:  # greedy: a figure is never broken between its number and its unit
                if line and 2 + len(line) + 2 + len(part) > con.width:
                    con.print("  " + line, style=style or "")
                    line = ""
                line = f"{line}  {part}" if line else part
            if line:
                con.print("  " + line, style=style or "")


def _estimate_footer(con, est: dict[str, Any], wide: bool = False) -> None:
    cat = est.get("catalog", {})
    shown, total = len(est.get("candidates", [])), est.get("candidates_total")
    if total and total > shown:
        con.print(f"{shown} of {total} priced offers shown (--all for every one, --wide for every column)")
    for note in est.get("notes", []):
        _print_note(con, str(note))
    _print_bands(con, est.get("candidates", []), "token" if (est.get("job") or {}).get("seq_len") else "sample")
    render_memory_plan(con, est.get("memory_plan") or [], wide=wide or con.width > 120)
    summary = est.get("summary") or {}
    if summary.get("sentence"):
        con.print(f"[bold]{escape(summary['sentence'])}[/]")
    if summary.get("reference_note"):
        con.print(escape(summary["reference_note"]))
    age = cat.get("age_days")
    if wide:
        stale = " [yellow](old: run `gpujob catalog update`)[/]" if cat.get("stale") else ""
        con.print(f"prices: {escape(str(cat.get('source')))}, snapshot {cat.get('snapshot')}"
                  + (f", {age:.0f} days old" if age is not None else "") + stale)
    else:  # one line at 80 columns: the sources are in --wide, --json and `gpujob catalog show`
        stale = "[yellow]: run `gpujob catalog update`[/]" if cat.get("stale") else ""
        con.print(f"prices: {escape(str(cat.get('source')).split(':')[0])} snapshot {cat.get('snapshot')}"
                  + (f", {age:.0f} days old" if age is not None else "") + stale)
    cal = est.get("calibration")
    if cal:  # one line: the source's detail (file names) is in --json
        con.print(escape(f"calibration: {cal.get('points')} points, {str(cal.get('source')).split(' (')[0]}, fitted "
                         f"{(cal.get('fitted_at') or 'never')[:10]}"), no_wrap=True, overflow="ellipsis")


def render_memory_plan(con, rows: list[dict[str, Any]], wide: bool = True) -> None:
    """Language models: the fewest GPUs of each type that hold the job, per GPU GiB planned.

    ``wide=False``: one line per GPU at 80 columns (GPU count and parallelism; instances with ``wide``).
    """
    if not rows:
        return
    t = (Table(show_edge=False, header_style="bold",
               title="memory plan: the fewest GPUs of a machine on offer that fit (AdamW, fp32 master)")
         if wide else Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False, padding=0))
    if not wide:  # GPUs sold only 8 to a machine show 8 even when one would hold the job
        con.print("[bold]memory plan: fewest GPUs of an offered machine that fit (G: GiB/GPU)[/]")
    for col in ("GPU", "GiB", "no checkpointing", "with checkpointing"):
        t.add_column(col, justify="right" if col == "GiB" else "left", no_wrap=not wide)

    def cell(fit: dict | None) -> str:
        if not fit:
            return "does not fit"
        how = {"single": "1 GPU", "ddp": "DDP", "fsdp": "FSDP"}[fit["parallel"]]
        if not wide:  # "16 (2x8) FSDP, 13G": GPUs (machines x GPUs each), how, GiB per GPU
            if fit["parallel"] == "single":
                return f"1 GPU, {fit['allocated_gib']:.0f}G"
            machines = f" ({fit['machines']}x{fit['gpus_per_machine']})" if fit["machines"] > 1 else ""
            return f"{fit['gpus']}{machines} {how}, {fit['allocated_gib']:.0f}G"
        machines = f"{fit['machines']} x " if fit["machines"] > 1 else ""
        return f"{fit['gpus']} ({machines}{fit['instance']}), {how}, {fit['allocated_gib']:.0f} GiB/GPU"

    for r in rows:
        t.add_row(r["gpu"], f"{r['gpu_memory_gib']:.0f}", cell(r["without_checkpointing"]), cell(r["with_checkpointing"]))
    con.print(t)


# --- run events ---------------------------------------------------------------------------


def probe_notice(seconds: float) -> str:
    """The line said just before the CPU probe starts (estimate and run)."""
    return f"measuring this machine's CPU (~{seconds:.0f} s, then cached; --no-baseline skips)"


class EventPrinter:
    """Receives runner events. Progress bar on a terminal, plain lines otherwise, or JSON lines."""

    def __init__(self, con, as_json: bool = False, replay: bool = False):
        self.con, self.as_json, self.replay = con, as_json, replay
        self.tty = con.is_terminal and not as_json
        self.gone = False
        con.on_broken_pipe = self._reader_gone  # rich would raise SystemExit mid-run instead
        self._progress = None
        self._task = None
        self._last_plain = 0.0
        self._stopping = False  # a signal stops the run: a later Ctrl-C's echoed "^C" may start the line
        self._unit = "sample"  # "token" for a language model: from its estimate or the payload's start

    def __call__(self, kind: str, **f: Any) -> None:
        if self.gone:
            return
        try:
            if self.as_json:
                sys.stdout.write(json.dumps({"event": kind, **f}, default=str) + "\n")
                sys.stdout.flush()
                return
            handler = getattr(self, "_on_" + kind.replace("-", "_"), None)
            if handler:
                handler(**f)
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        # The reader went away (`| head`): stop printing, but the run must still finish, fetch
        # and tear down. stdout now points at /dev/null so the exit-time flush is quiet too.
        import os

        self.gone = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def _say(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
            return
        if self._stopping and self.tty:  # "^Cwarning: stopping the job now": the line is cleared first
            from rich.control import Control, ControlType

            self.con.control(Control(ControlType.CARRIAGE_RETURN, (ControlType.ERASE_IN_LINE, 2)))
        self.con.print(text)

    def _on_run(self, run_id, name, provider, **_):
        self._say(f"[bold]run {run_id}[/] {escape(name)} on {provider}")

    def _on_estimate(self, total_seconds=None, total_usd=None, samples_per_second=None, error=None, unit=None,
                     total_error_band=None, **_):
        self._unit = unit or self._unit
        if total_seconds:
            self._say(f"estimate: {fmt_seconds(total_seconds)} total{_band(total_error_band)}, {fmt_usd(total_usd)}"
                      + (f", {fmt_rate(samples_per_second)} {unit or 'sample'}s/s" if samples_per_second else ""))
        elif error:  # the run goes on (a budget cannot be checked): say why there is no estimate
            self._say(f"[yellow]no estimate[/]: {escape(error)}")

    def _on_machine(self, id, instance_type=None, region=None, zone=None, host=None, price_per_hour=None, **_):
        where = " ".join(x for x in (instance_type, zone or region, host) if x)
        self._say(f"machine {escape(id)} ({escape(where)})" + (f", {fmt_usd(price_per_hour)}/h" if price_per_hour else ""))

    def _on_connected(self, **_):
        self._say("connected; uploading the payload")

    def _on_baseline(self, seconds=15.0, **_):
        self._say(probe_notice(seconds))

    def _on_zone_failed(self, zone=None, code=None, message=None, **_):
        self._say(f"[yellow]no capacity in {zone}[/] ({code}); trying the next zone")

    def _on_auto_try(self, offer, of, provider, instance_type, region, price_per_hour=None, **_):
        self._say(f"auto: trying offer {offer} of {of}: {provider} {escape(instance_type)} in {escape(region)}"
                  + (f" ({fmt_usd(price_per_hour)}/h)" if price_per_hour else ""))

    def _on_auto_next(self, provider, instance_type, region, reason, next=None, **_):
        self._say(f"[yellow]auto: {provider} {escape(instance_type)} in {escape(region)} failed[/] ({escape(reason)})"
                  + (f"; next: {escape(next)}" if next else "; no offer left"))

    def _on_kept(self, run_id, target, reach, release, **_):
        self._say(f"[yellow]kept:[/] {escape(target)} still runs and bills; reach it with `{reach}` "
                  f"(or `{reach} -- CMD`), release it with `{release}`")

    def _on_upload(self, message, **_):
        self._say(f"[yellow]large upload:[/] {escape(str(message))}")

    def _on_warning(self, message, signal=None, **_):
        if signal:  # the run stops: its bar ends before the warning, not left standing above it
            self._stop_bar()
            self._stopping = True
        self._say(f"[yellow]warning:[/] {escape(str(message))}")

    def _on_recovering(self, attempt, market, reclaimed_zone=None, checkpoint=None, **_):
        self._say(f"[yellow]spot machine reclaimed[/]{f' in {escape(reclaimed_zone)}' if reclaimed_zone else ''}: "
                  f"released it; attempt {attempt} on {market} capacity, resuming from "
                  + (escape(str(checkpoint)) if checkpoint else "the start (no checkpoint was saved)"))

    def _on_checkpoint_pulled(self, path, bytes, **_):
        if self._progress is None:  # the progress bar's line says enough; plain output notes each copy
            self._say(f"checkpoint home: {escape(str(path))} ({bytes:,} bytes)")

    def _on_setup(self, **_):
        self._say("running setup")

    def _on_detached(self, run_id, **_):
        pass

    def _on_log(self, text, replay=False, **_):
        if not text:
            return
        from launcher.payloads.protocol import parse_line as parse_protocol

        from launcher.streaming import display_line

        lines = text.split("\n") if replay else [text]  # not splitlines(): a `\r` update is no line end
        if replay and lines and not lines[-1]:
            lines.pop()
        for line in lines:
            ev = parse_protocol(line) if len(line) < 65536 else None
            if ev is None:
                self._say(escape(display_line(line) if replay else line))
            elif replay:
                self._payload(ev)

    def _on_payload(self, event, **_):
        self._payload(event)

    def _payload(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "start":
            self._unit = "token" if ev.get("seq_len") else self._unit
            self._say(f"training {ev.get('model')} on {ev.get('device_name') or ev.get('device')} "
                      f"({ev.get('precision')}, world size {ev.get('world_size', 1)})")
        elif kind == "epoch":
            acc = ev.get("accuracy")
            self._say(f"epoch {ev.get('epoch')}: loss {ev.get('loss', 0):.4f}" + (f", accuracy {acc:.1%}" if acc is not None else ""))
        elif kind == "checkpoint":
            self._say(f"checkpoint at step {ev.get('step')} ({ev.get('reason')})")
        elif kind == "end":
            self._say(f"training {ev.get('status')}: {ev.get('samples', 0):,} {self._unit}s in "
                      f"{fmt_seconds(ev.get('elapsed'))}, {ev.get('samples_per_second') or 0:,.1f} {self._unit}s/s")
        elif kind == "step" and self.replay:
            loss = ev.get("loss")
            self._say(f"step {ev.get('step')}: {ev.get('samples', 0):,} {self._unit}s"
                      + (f", loss {loss:.4f}" if isinstance(loss, (int, float)) else ""))

    def _on_progress(self, samples, total, samples_per_second, eta_s=None, spent_usd=None, loss=None, **_):
        if self.tty:
            from rich.progress import BarColumn, TextColumn

            if self._progress is None:
                self._progress = _bar(self.con, TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.fields[info]}"))
                self._progress.start()
                self._task = self._progress.add_task("training", total=total, info="")
            info = (f"{samples:,}/{total:,}  {samples_per_second:,.0f}/s  ETA {fmt_seconds(eta_s)}  "
                    f"{fmt_usd(spent_usd)}" + (f"  loss {loss:.3f}" if isinstance(loss, (int, float)) else ""))
            self._progress.update(self._task, completed=min(samples, total), info=info)
        elif time.monotonic() - self._last_plain >= 5:
            self._last_plain = time.monotonic()
            self.con.print(f"progress {samples:,}/{total:,} {self._unit}s, {samples_per_second:,.0f}/s, ETA "
                           f"{fmt_seconds(eta_s)}, spent {fmt_usd(spent_usd)}")

    def _on_artifacts(self, path, files, **_):
        self._stop_bar()
        self._say(f"artifacts: {files} file(s) in {escape(path)}")

    def _on_teardown(self, resources, **_):
        self._stop_bar()
        if resources:
            self._say(f"tearing down {resources} resource(s)")

    def _on_teardown_done(self, leftovers, **_):
        if leftovers:
            self._say(f"[red]{leftovers} resource(s) could not be deleted[/]")

    def _stop_bar(self):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self):
        self._stop_bar()

    def __enter__(self) -> "EventPrinter":
        return self

    def __exit__(self, *exc) -> None:  # an error or Ctrl-C ends the bar before its one line is printed
        self.close()


# Columns the progress bar leaves free at the end of its line: the terminal echoes a Ctrl-C there
# ("^C", twice for two), and on a line that filled the width the echo wrapped onto the next line,
# where the bar's next refresh drew, leaving its last state standing above the interrupt warning.
ECHO_ROOM = 5


def _bar(con, *columns):
    """rich's Progress on ``con`` (transient), its line ``ECHO_ROOM`` columns short of the width."""
    from rich.constrain import Constrain
    from rich.progress import Progress

    class Bar(Progress):
        def get_renderable(self):
            return Constrain(super().get_renderable(), width=max(con.width - ECHO_ROOM, 20))

    return Bar(*columns, console=con, transient=True)


def too_wide(con, t: Table, at_least: bool = False) -> bool:
    """Whether ``t`` at its natural width is wider than the console (rich would squeeze its cells);
    ``at_least``: whether even its narrowest, every cell wrapped to its longest word, is (rich would cut)."""
    from rich.measure import Measurement

    need = Measurement.get(con, con.options.update_width(1 << 16), t)
    return (need.minimum if at_least else need.maximum) > con.width


def narrowed(t: Table) -> Table:
    """``t`` in the narrow estimate table's style: no column rules, one space between columns."""
    t.box, t.pad_edge, t.padding = box.SIMPLE_HEAD, False, 0
    return t


def fitted(con, t: Table) -> Table:
    """``t`` when it fits the console, else ``narrowed(t)``: rich then wraps or cuts fewer cells
    (at 80 columns `gpujob gpus` showed "2.74/…" for every price pair)."""
    return narrowed(t) if too_wide(con, t) else t


def render_plan(con, plan: dict[str, Any]) -> None:
    con.print("[bold]dry run[/]: nothing will be created")
    t = Table(show_header=False, show_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")  # a long path or command wraps, never cut (the AMI's SSM parameter)
    for key, value in plan.get("plan", {}).items():
        if key == "order" and isinstance(value, list):
            value = "\n".join(map(str, value))  # --provider auto: one offer a line
        if key == "commands":  # one row per node: the exact command line it runs
            for c in value:
                t.add_row(f"node {c['node']} runs", escape(c["command"]))
            continue
        if value is None:  # a field that does not apply here (no GPU on this machine)
            continue
        if key == "price_per_hour" and isinstance(value, (int, float)):
            value = f"{fmt_usd(value)}/h"
        t.add_row(key, escape(value if isinstance(value, str) else json.dumps(value, default=str)))
    est = plan.get("estimate") or {}
    if est.get("total_seconds"):
        cpu = (est.get("baseline") or {}).get("basis") if str(est.get("basis", "")).startswith("cpu") else None
        where = "this CPU"
        if plan.get("plan", {}).get("provider") == "ssh":  # the host is not asked before the run
            from launcher.runner import CPU_STAND_IN as where
        t.add_row("estimate", f"{fmt_seconds(est.get('total_seconds'))}{_band(est.get('total_error_band'))}, "
                  f"{fmt_usd(est.get('total_usd'))}"
                  + (f", {fmt_rate(est['samples_per_second'])} {est.get('unit') or 'sample'}s/s"
                     if est.get("samples_per_second") else "")
                  + (f" ({where}, {escape(cpu)})" if cpu else ""))
    elif est.get("error"):
        t.add_row("estimate", f"[yellow]none[/]: {escape(est['error'])}")
    if plan.get("budget_usd"):
        t.add_row("budget", fmt_usd(plan["budget_usd"]))
    con.print(t)


def render_report(con, r: dict[str, Any]) -> None:
    a, e, d = r.get("actual", {}), r.get("estimate", {}), r.get("delta_pct", {})
    con.print(f"[bold]run {r['run_id']}[/] {escape(r['name'])}: [bold]{r['state']}[/]"
              + (f" ({escape(str(r['reason']))})" if r.get("reason") else ""))
    t = Table(show_edge=False, header_style="bold")
    for col in ("", "estimate", "actual", "delta"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("total time", fmt_seconds(e.get("total_seconds")), fmt_seconds(a.get("total_seconds")),
              fmt_pct(d.get("total_seconds")))
    t.add_row("training incl. warm-up", fmt_seconds(e.get("train_seconds")), fmt_seconds(a.get("train_seconds")),
              fmt_pct(d.get("train_seconds")))
    sps_e, sps_a = e.get("samples_per_second"), a.get("samples_per_second")
    t.add_row(f"{r.get('unit') or 'sample'}s/s", f"{sps_e:,.1f}" if sps_e else "-", f"{sps_a:,.1f}" if sps_a else "-",
              fmt_pct(d.get("samples_per_second")))
    t.add_row("cost", fmt_usd(e.get("usd")), fmt_usd(a.get("usd")), fmt_pct(d.get("usd")))
    con.print(t)
    if a.get("final_loss") is not None:
        acc = a.get("accuracy")
        con.print(f"final loss {a['final_loss']:.4f}" + (f", accuracy {acc:.1%}" if acc is not None else ""))
    vs = r.get("vs_cpu")
    if vs:
        con.print(f"vs this machine's CPU: {fmt_seconds(vs['cpu_seconds'])} on CPU, speedup {vs['speedup']:.1f}x, "
                  f"{'saves' if vs['hours_saved'] >= 0 else 'loses'} {fmt_seconds(abs(vs['hours_saved']) * 3600)}"
                  + (f" for {fmt_usd(a.get('usd'))}" if a.get("usd") else ""))
    if len(r.get("attempts") or ()) > 1:
        render_attempts(con, r["attempts"])
    if r.get("artifacts_dir"):
        con.print(f"artifacts: {escape(r['artifacts_dir'])}")


def render_attempts(con, attempts: list[dict[str, Any]]) -> None:
    """One row per attempt of a run whose spot machine was replaced (store.RunRecord.attempt_rows)."""
    t = Table(title="attempts", show_edge=False, header_style="bold")
    for col in ("#", "where", "instance", "market", "time", "cost", "ended"):
        t.add_column(col, justify="right" if col in ("#", "time", "cost") else "left")
    for a in attempts:
        where = a.get("zone") or a.get("region") or "-"
        t.add_row(str(a["attempt"]), escape(f"{a.get('provider')} {where}"), escape(str(a.get("instance_id") or "-")),
                  a.get("market") or "-", fmt_seconds(a.get("seconds")), fmt_usd(a.get("cost_usd")),
                  escape(str(a.get("end_reason") or "-")))
    con.print(t)


def render_runs(con, runs) -> None:
    if not runs:
        con.print("no runs yet: try `gpujob run jobs/quickstart.yaml`")
        return
    t = Table(show_edge=False, header_style="bold")
    for col in ("id", "name", "provider", "state", "started", "elapsed", "$ so far"):
        t.add_column(col, no_wrap=col not in ("name", "state"), overflow="fold")  # narrowed: the name and state wrap
    from launcher.liveness import orphaned

    for r in runs:
        t.add_row(r.id, escape(r.name), r.provider, r.state + (" [yellow](orphaned: client gone)[/]" if orphaned(r) else ""),
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
                  fmt_seconds(r.billed_seconds()), fmt_usd(r.charged_usd()))
    con.print(fitted(con, t))
    for r in runs:  # a run that may still bill says what is left and the command that deletes it
        if r.state == "leftovers":
            con.print(f"[red]{r.id}: {escape(r.reason or 'resources not confirmed gone')}[/]")


def render_catalog(con, prov, offers) -> None:
    t = Table(show_edge=False, header_style="bold")
    for col in ("provider", "instance", "region", "GPU", "GPU mem", "vCPU", "on-demand $/h", "spot $/h", "zones"):
        t.add_column(col, overflow="fold")  # narrowed: values wrap, never cut
    for o in offers:
        t.add_row(o.provider, o.instance_type, o.region, f"{o.gpu} x{o.gpu_count}",
                  f"{o.gpu_memory_gib:g} GiB" if o.gpu_memory_gib else "-", f"{o.vcpus:g}", fmt_usd(o.price),
                  fmt_usd(o.spot_price), str(len(o.zones)))
    con.print(fitted(con, t))
    from launcher.catalog.reference import NOTE, is_reference

    ref = sorted({o.provider for o in offers if is_reference(o.provider)})
    if ref:
        con.print(f"{', '.join(ref)}: {NOTE}")
    stale = " [yellow](old: run `gpujob catalog update`)[/]" if prov.stale else ""
    con.print(f"{len(offers)} offers; source {escape(prov.source)}, snapshot {prov.snapshot}, "
              f"{prov.age_days:.0f} days old{stale}")


def render_gc(con, report: dict[str, Any], deleted: bool, confirming: bool = False) -> None:
    orphans = report.get("orphans", [])
    runs = report.get("orphaned_runs", [])
    live = report.get("live", [])
    for err in report.get("errors", []):
        con.print(f"[yellow]skipped {escape(err)}[/]")
    for line in report.get("unchecked", []) + report.get("skipped", []):
        con.print(f"[yellow]not checked: {escape(line)}[/]")
    if not orphans and not runs:
        if not confirming:
            con.print(f"nothing to collect ({len(live)} resource(s) belong to live runs)")
        return
    if confirming:
        con.print("[bold]gc --yes will stop and release:[/]")
    for r in runs:
        what = ", ".join(r["resources"]) or "no recorded resource"
        con.print(f"orphaned run {r['run_id']} ({escape(r['name'])}, {r['provider']}, {r['state']}; client pid "
                  f"{r['client_pid']} on {escape(str(r['client_host']))} is gone): {escape(what)}")
    if orphans:
        t = Table(show_edge=False, header_style="bold")
        for col in ("provider", "kind", "id", "region", "run", "state"):
            t.add_column(col)
        for o in orphans:
            t.add_row(o["provider"], o["kind"], o["id"], o.get("region") or "-", o.get("run_id") or "-",
                      o.get("state") or "-")
        con.print(t)
    if confirming:
        return
    if deleted:
        left = report.get("leftovers", [])
        con.print(f"collected {len(runs)} orphaned run(s); deleted {len(orphans) - len(left)} of {len(orphans)} "
                  "tagged resource(s)" + ("; could not delete: " + "; ".join(escape(x) for x in left) if left else ""))
    else:
        con.print(f"{len(runs)} orphaned run(s), {len(orphans)} orphaned resource(s); run `gpujob gc --yes` to "
                  "stop and delete them")
