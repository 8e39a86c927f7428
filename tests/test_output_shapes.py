"""Output of any shape (issue 14, failure 8): a huge line without newlines is stored whole and shown cut
with a note; `\\r` updates show as the latest; ordinary lines and protocol events are unchanged."""

from __future__ import annotations

import io
import json

from rich.console import Console

from launcher.payloads.protocol import format_event
from launcher.render import EventPrinter
from launcher.spec import parse_spec
from launcher.streaming import SHOW_MAX, Progress, display_line, planned_total
from launcher.store import Store


def _progress(tmp_path):
    store = Store(tmp_path / "runs.db")
    store.create_run("r1", "job", "local", spec_path=None, spec_text=None, spec={}, provider_config={})
    events: list = []
    spec = parse_spec("name: job\n")
    return store, events, Progress(store, lambda kind, **f: events.append((kind, f)), lambda: 0.0, "r1", spec, 0)


def test_huge_line_is_stored_whole_and_shown_cut_with_a_note(tmp_path):
    store, events, p = _progress(tmp_path)
    chunk = "x" * 65536
    for _ in range(64):  # 4 MiB, no newline, in the chunks a stream delivers
        p.feed(chunk)
    p.feed("\nafter\n")
    p.flush()  # the end of the stream commits what is pending
    logs = [f["text"] for k, f in events if k == "log"]
    assert len(logs) == 2 and logs[1] == "after"
    assert logs[0].startswith("x" * SHOW_MAX) and len(logs[0]) < SHOW_MAX + 200
    assert f"{64 * 65536 - SHOW_MAX:,} more characters not shown" in logs[0]
    assert store.log_text("r1") == chunk * 64 + "\nafter\n"  # every byte kept


def test_carriage_return_updates_show_the_latest(tmp_path):
    store, events, p = _progress(tmp_path)
    p.feed("epoch 1:  10%\r")
    p.feed("epoch 1:  20%\repoch 1:  30")
    p.feed("%\repoch 1: 100%\n")
    p.flush()
    logs = [f for k, f in events if k == "log"]
    assert logs[0] == {"run_id": "r1", "text": "epoch 1:  10%", "update": True}  # the first update, at once
    assert logs[-1] == {"run_id": "r1", "text": "epoch 1: 100%"}  # the line as it ended
    assert display_line("a\rb\rc\r") == "c"
    assert store.log_text("r1").count("\r") == 3  # the stored log keeps the bytes


def test_protocol_events_still_parse(tmp_path):
    store, events, p = _progress(tmp_path)
    p.feed(json.dumps({"gpujob": 1, "event": "epoch", "epoch": 1, "loss": 0.5}) + "\nplain\n")
    kinds = [k for k, _ in events]
    assert kinds in (["payload", "log"], ["log", "log"])
    assert events[-1] == ("log", {"run_id": "r1", "text": "plain"})


def test_replay_of_a_huge_line_is_cut_too():
    out = io.StringIO()
    printer = EventPrinter(Console(file=out, width=200), replay=True)
    printer("log", run_id="r1", text="y" * (1 << 20) + "\nshort\n", replay=True)
    text = out.getvalue()
    assert "more characters not shown" in text and "short" in text and len(text) < 20_000


def test_an_interrupt_ends_the_progress_bar_before_its_warning():
    """After Ctrl-C at 80 columns the bar's last state stayed on screen above "warning: SIGINT
    received": the bar line filled the width, the terminal's echoed "^C" wrapped onto the next
    line, the bar's next refresh drew there, and the warning was printed above the still live bar.
    The bar now ends (erased) before the warning and leaves its line's last columns free."""
    import re

    from rich.cells import cell_len

    out = io.StringIO()
    printer = EventPrinter(Console(file=out, width=80, force_terminal=True, color_system=None))
    printer("progress", run_id="r1", samples=7_680, total=14_400, samples_per_second=1_270.0, eta_s=5.0,
            spent_usd=0.0, loss=0.138)
    printer._progress.refresh()  # what rich's refresh thread draws 10 times a second
    printer("warning", run_id="r1", signal="SIGINT", message="SIGINT received: stopping the job")
    printer("artifacts", run_id="r1", path="/tmp/x", files=2)
    printer.close()
    before, _, after = out.getvalue().partition("warning:")
    assert "training" in before and "training" not in after and "artifacts: 2 file(s)" in after
    drawn = [line for line in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", before)) if "training" in line]
    assert drawn and max(cell_len(line) for line in drawn) <= 80 - 2, drawn  # room for "^C"


def test_after_an_interrupt_each_line_clears_a_second_ctrl_cs_echo_first():
    """A second Ctrl-C while the run released itself printed "^Cwarning: stopping the job now":
    the terminal echoed "^C" at the start of the empty line the next message then began on. After
    the interrupt's warning, each line on a terminal starts by clearing its line (not in a pipe)."""
    out = io.StringIO()
    printer = EventPrinter(Console(file=out, width=80, force_terminal=True, color_system=None))
    printer("warning", run_id="r1", message="before any signal")
    printer("warning", run_id="r1", signal="SIGINT", message="SIGINT received: stopping the job")
    printer("warning", run_id="r1", message="stopping the job now, without its checkpoint")
    text = out.getvalue()
    assert "\r\x1b[2Kwarning: stopping the job now" in text and "\r\x1b[2Kwarning: before" not in text
    piped = io.StringIO()
    printer = EventPrinter(Console(file=piped, width=80))
    printer("warning", run_id="r1", signal="SIGINT", message="SIGINT received")
    printer("warning", run_id="r1", message="stopping the job now")
    assert "\x1b" not in piped.getvalue() and "\r" not in piped.getvalue()


def test_progress_uses_the_payloads_planned_total_and_never_overshoots(tmp_path):
    """quickstart: 1,797 digits x 8 epochs at batch 64 is 225 whole steps = 14,400 samples; the
    line said '14,400/14,376 ETA -1s' before it took the total from the payload's start event."""
    store = Store(tmp_path / "runs.db")
    store.create_run("r1", "job", "local", spec_path=None, spec_text=None, spec={}, provider_config={})
    events: list = []
    spec = parse_spec("name: job\nworkload:\n  samples_per_epoch: 1797\n  epochs: 8\n  batch_size: 64\n")
    p = Progress(store, lambda kind, **f: events.append((kind, f)), lambda: 0.0, "r1", spec, 0)
    assert p.total == 14_376
    line = lambda **ev: format_event(**ev) + "\n"  # noqa: E731
    p.feed(line(event="start", steps=225, global_batch_size=64, total_samples=14_376))
    p.feed(line(event="step", step=224, samples=14_336, samples_per_second=640.0))
    p.feed(line(event="step", step=225, samples=14_400, samples_per_second=640.0))
    prog = [f for k, f in events if k == "progress"]
    assert [(f["samples"], f["total"]) for f in prog] == [(14_336, 14_400), (14_400, 14_400)]
    assert prog[0]["eta_s"] == 0.1 and prog[1]["eta_s"] == 0.0
    # a payload that says nothing of its plan (a custom one) and runs past the spec's total
    events.clear()
    q = Progress(store, lambda kind, **f: events.append((kind, f)), lambda: 0.0, "r1", spec, 0)
    q.feed(line(event="step", step=225, samples=14_400, samples_per_second=640.0))
    (f,) = [f for k, f in events if k == "progress"]
    assert f["total"] == 14_400 and f["eta_s"] == 0.0


def test_token_payload_total_counts_tokens_per_step():
    assert planned_total({"steps": 3, "global_batch_size": 2, "tokens_per_step": 2 * 512}, 3000) == 3072
    assert planned_total({"event": "start"}, 3000) == 3000


def test_a_language_model_run_counts_tokens_in_every_line():
    """gpujob run jobs/tokenlm.yaml: the estimate said '65,536 tokens' and '1,508 tokens/s', then
    the run said 'progress 20,480/65,536 samples', 'training ok: 65,536 samples ... samples/s' and
    the report's row 'samples/s' for the same tokens."""
    from launcher.render import render_report

    out = io.StringIO()
    printer = EventPrinter(Console(file=out, width=200))
    printer("estimate", run_id="r1", total_seconds=47.0, total_usd=0.0, samples_per_second=1508.0, unit="token")
    printer("payload", run_id="r1", event={"event": "start", "model": "m.py:lm", "device": "cpu", "precision": "bf16",
                                           "world_size": 1, "seq_len": 128, "tokens_per_step": 2048})
    printer("progress", run_id="r1", samples=20_480, total=65_536, samples_per_second=842.0, eta_s=54.0,
            spent_usd=0.0)
    printer("payload", run_id="r1", event={"event": "end", "status": "ok", "samples": 65_536, "elapsed": 45.0,
                                           "samples_per_second": 1570.0})
    render_report(Console(file=out, width=200), {
        "run_id": "r1", "name": "lm", "state": "succeeded", "unit": "token",
        "actual": {"samples_per_second": 1570.0}, "estimate": {"samples_per_second": 1508.0}, "delta_pct": {}})
    text = out.getvalue()
    assert "progress 20,480/65,536 tokens" in text and "65,536 tokens in 45s, 1,570.0 tokens/s" in text, text
    assert any(line.lstrip().startswith("tokens/s") for line in text.splitlines()), text  # the report's row
    assert "sample" not in text, text


def test_the_error_band_counts_tokens_for_a_language_model_and_wraps_under_its_text():
    from launcher.render import _estimate_footer

    basis = "leave-one-model-out error combined with the ratio error on published figures of other GPUs"
    out = io.StringIO()
    _estimate_footer(Console(file=out, width=80), {"job": {"seq_len": 128}, "candidates": [
        {"error_band": 0.1855, "band_basis": basis}]})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("tokens/s ±19% (leave-one-model-out") and "sample" not in out.getvalue()
    assert lines[1].startswith(" " * len("tokens/s ")), lines  # continued under its text, not at column 0


def test_the_estimate_line_shows_a_total_band_only_when_there_is_one():
    out = io.StringIO()
    printer = EventPrinter(Console(file=out, width=200))
    printer("estimate", run_id="r1", total_seconds=89.9, total_usd=0.0, samples_per_second=7642.0,
            unit="sample", total_error_band=0.139)
    printer("estimate", run_id="r2", total_seconds=600.0, total_usd=1.5, samples_per_second=100.0, unit="sample")
    printer.close()
    first, second = [ln for ln in out.getvalue().splitlines() if "estimate:" in ln]
    assert "90s total (±14%), $0.00" in first and "10.0m total, $1.50" in second and "±" not in second


def test_the_eta_follows_the_run_s_rate_not_one_noisy_interval(tmp_path):
    """On a busy machine the payload's per-interval rate swung 99-2,347 samples/s and the ETA with
    it (1.8 h, 12.6 m, 43 m, 4.5 h within a minute) while the run went at ~1,000/s. The ETA and
    the rate shown are over the last RATE_WINDOW_S of the run."""
    store = Store(tmp_path / "runs.db")
    store.create_run("r1", "job", "local", spec_path=None, spec_text=None, spec={}, provider_config={})
    events: list = []
    spec = parse_spec("name: job\nworkload:\n  samples_per_epoch: 200000\n  batch_size: 100\n")
    p = Progress(store, lambda kind, **f: events.append((kind, f)), lambda: 0.0, "r1", spec, 0)
    line = lambda **ev: format_event(**ev) + "\n"  # noqa: E731
    p.feed(line(event="start", steps=2000, global_batch_size=100, total_samples=200_000))
    for i, sps in enumerate([250, 2000, 120, 2300, 100, 2100, 99, 2200], start=1):  # 10 s apart, 10,000 samples
        p.feed(line(event="step", step=100 * i, samples=10_000 * i, elapsed=10.0 * i, samples_per_second=sps))
    last = [f for k, f in events if k == "progress"][-1]
    assert last["samples_per_second"] == 1000.0 and last["eta_s"] == 120.0  # 120,000 left at 1,000/s
    # a resumed attempt starts its clock again: its first interval stands on its own
    p.feed(line(event="step", step=900, samples=90_000, elapsed=5.0, samples_per_second=700))
    last = [f for k, f in events if k == "progress"][-1]
    assert last["samples_per_second"] == 700


def test_leaving_logs_follow_ends_the_progress_bar_before_the_error(monkeypatch):
    """Ctrl-C in `gpujob logs RUN --follow` at 80 columns printed "... loss 1.022error" and then
    ": stopped following run ..." on the next line: the bar was never ended when the command left
    by an exception, so the error line began where the bar stood. Every command's printer now
    ends its bar (erased) however the command leaves."""
    from typer.testing import CliRunner

    import launcher.cli as cli
    from launcher.errors import Interrupted
    from launcher.runner import Runner

    out = io.StringIO()
    monkeypatch.setattr(cli, "_out", lambda: Console(file=out, width=80, force_terminal=True, color_system=None))
    printers = []

    def attach(self, run_id, follow=False):
        printers.append(self.on_event)
        self.on_event("progress", run_id=run_id, samples=3_840, total=143_808, samples_per_second=369.0,
                      eta_s=378.0, spent_usd=0.0, loss=1.022)
        self.on_event._progress.refresh()
        raise Interrupted(f"stopped following run {run_id}; the job keeps running")

    monkeypatch.setattr(Runner, "attach", attach)
    res = CliRunner().invoke(cli.app, ["logs", "r1", "--follow"])
    assert res.exit_code == 130 and "stopped following run r1" in res.output, res.output
    assert "training" in out.getvalue() and printers[0]._progress is None  # drawn, then ended
    assert out.getvalue().endswith("\x1b[2K"), repr(out.getvalue()[-80:])  # its line erased
