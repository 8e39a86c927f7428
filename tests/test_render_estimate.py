"""The estimate table at 80 columns: one line per row, deciding columns in full; the rest with --wide."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from launcher.cli import app
from launcher.render import fmt_usd, render_estimate

REPO = Path(__file__).resolve().parent.parent
JOBS = ("vgg16", "resnet50", "quickstart", "llama-8b-fsdp")


@pytest.fixture(scope="module")
def estimates(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GPUJOB_HOME", str(tmp_path_factory.mktemp("home")))
    out = {}
    for name in JOBS:
        res = CliRunner().invoke(app, ["estimate", str(REPO / "jobs" / f"{name}.yaml"), "--no-baseline", "--json"])
        assert res.exit_code == 0, res.output
        out[name] = json.loads(res.stdout)
    mp.undo()
    return out


def _render(est, width=80, wide=False) -> list[str]:
    buf = io.StringIO()
    render_estimate(Console(file=buf, width=width, force_terminal=True, color_system=None), est, wide=wide)
    return buf.getvalue().splitlines()


def _rows(lines: list[str]) -> list[str]:
    """Table rows: the lines under the header rule, up to the legend or footer, that end in a $ amount."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith("provider"))
    body = lines[start + 2:]
    body = body[:next(i for i, ln in enumerate(body) if re.match(r"(\$ |! |\d+ of |note:|samples/s)", ln))]
    return [ln for ln in body if re.search(r"(\$[\d,.]+|-)$", ln.rstrip())]


@pytest.mark.parametrize("job", JOBS)
def test_every_row_is_one_line_with_the_deciding_columns_in_full(estimates, job):
    est = json.loads(json.dumps(estimates[job]))
    est["baseline"] = {"cores": 2, "seconds": 1e6}
    lines = _render(est)
    assert all(len(ln) <= 80 for ln in lines), max(lines, key=len)
    rows = _rows(lines)
    assert len(rows) == len(est["candidates"]) + 1 + len(est["free_options"])  # + this machine
    for row, c in zip(rows, est["candidates"]):
        full = (c["instance_type"], c["region"], f"{c['gpu']} x{c['gpu_count']}")
        for cell in (c["provider"], "spot" if c["spot"] else "on-demand", fmt_usd(c["total_usd"]),
                     *(full if c["provider"] in ("aws", "gcp") else ())):  # estimate-only clouds may be cut
            assert cell in row, (cell, row)
    assert all(r.startswith("free") and "free tier" in r and "$0.00" in r for r in rows[-len(est["free_options"]):])


def test_sections_are_labelled_and_share_one_header(estimates):
    est = estimates["vgg16"]
    lines = _render(est)
    titles = [est["sections"]["requested"], est["sections"]["alternative"]]
    at = [lines.index(t) for t in titles]
    assert at[0] < at[1] and "p3.2xlarge" in lines[at[0] + 3] and sum(ln.startswith("provider") for ln in lines) == 1
    # the quickstart read "free Kaggle T4 x2 free tier 0s" under a "total" that is 6.0m for the
    # cloud rows (start-up included): the comparison rows' times are training alone, and say so
    assert any(ln.startswith("for comparison, training only, not launch targets") for ln in lines)


def test_flags_and_legend(estimates):
    est = json.loads(json.dumps(estimates["vgg16"]))
    est["candidates"][1]["over_budget"] = True
    est["candidates"][2]["fits_memory"] = False
    rows = _rows(_render(est))
    assert rows[1].split()[0].endswith("$") and rows[2].split()[0].endswith("!")
    legend = next(ln for ln in _render(est) if ln.startswith("$ "))
    assert "over the $25 budget" in legend and "! does not fit" in legend


def test_footer_names_the_calibration_in_one_line(estimates):
    cal = estimates["vgg16"]["calibration"]
    line = next(ln for ln in _render(estimates["vgg16"]) if ln.startswith("calibration:"))
    assert f"{cal['points']} points" in line and cal["fitted_at"][:10] in line and len(line) <= 80


def test_wide_adds_throughput_and_notes(estimates):
    wide = "\n".join(_render(estimates["vgg16"], width=250, wide=True))
    assert "samples/s" in wide and "$/h" in wide and "overhead" in wide
    assert "$/h" not in "\n".join(_render(estimates["vgg16"]))


def test_memory_plan_is_one_line_per_gpu_at_80_columns(estimates):
    est = estimates["llama-8b-fsdp"]
    lines = _render(est)
    start = next(i for i, ln in enumerate(lines) if ln.startswith("GPU "))
    plan = lines[start + 2:start + 2 + len(est["memory_plan"])]
    assert [ln.split()[0] for ln in plan] == [r["gpu"] for r in est["memory_plan"]]
    assert all(len(ln) <= 80 and "…" not in ln for ln in plan)
    assert "GiB/GPU" in "\n".join(_render(est, width=250, wide=True))  # --wide names the instances


def test_title_and_footer_lines_do_not_wrap_mid_phrase_at_80_columns(estimates):
    """At 80 columns the title broke inside "92.6 GFLOP/sample", a small model read "0.0 GFLOP",
    and the price provenance took four lines: the title now breaks between its parts only, FLOPs
    carry their own unit, and the footer's count and prices lines are one line each."""
    est = json.loads(json.dumps(estimates["vgg16"]))
    est["job"]["name"] = "a-rather-long-job-name-for-an-eighty-column-terminal"
    lines = _render(est)
    title = lines[:next(i for i, ln in enumerate(lines) if ln.startswith("what the spec"))]
    assert len(title) == 2 and title[1].startswith("  ") and "92.6 GFLOP/sample (train)" in title[1]
    shown = next(ln for ln in lines if " of " in ln and "offers shown" in ln)
    prices = next(ln for ln in lines if ln.startswith("prices:"))
    assert lines[lines.index(prices) + 1].startswith("calibration:")  # one line, nothing wrapped under it
    assert len(shown) <= 80 and len(prices) <= 80 and "snapshot" in prices
    est["job"]["train_flops_per_sample"] = 1.6e6
    assert "1.6 MFLOP/sample" in "\n".join(_render(est))
    lm = _render(estimates["llama-8b-fsdp"])
    assert any("tokens" in ln for ln in lm[:2]) and any("/token (train)" in ln for ln in lm[:2])


def test_a_long_note_wraps_under_its_text_at_80_columns(estimates):
    """At 80 columns 'note: bf16 has no fast path on P100, ...' (121 characters) went on at column 0
    ('their fp32 rate; use precision: fp16 there'), reading as a second, unlabelled line."""
    est = json.loads(json.dumps(estimates["resnet50"]))
    note = ("bf16 has no fast path on P100, P4, T4, T4g, V100, V100-32GB: estimated at their fp32 rate; "
            "use precision: fp16 there")
    est["notes"] = [note]
    lines = _render(est)
    at = next(i for i, ln in enumerate(lines) if ln.startswith("note: bf16"))
    shown = [lines[at]] + [ln for ln in lines[at + 1:at + 3] if ln.startswith("      ")]
    assert len(shown) == 2 and all(len(ln) <= 80 for ln in shown)
    assert " ".join(ln.strip() for ln in shown) == "note: " + note  # broken between words, nothing lost
    wide = _render(est, width=200)
    assert ("note: " + note) in [ln.rstrip() for ln in wide]  # one line where it fits


def test_a_long_model_path_in_the_title_goes_under_the_name_indented(estimates):
    """'my-experimental-...-name:' then 'very/long/path/to/models/...py:build fp32,' at column 0:
    the first part was never measured, rich wrapped it at the space after the name."""
    est = json.loads(json.dumps(estimates["vgg16"]))
    est["job"].update(name="my-experimental-resnet-variant-with-a-long-name",
                      model="very/long/path/to/models/resnet_variants_experimental.py:build")
    lines = _render(est)
    title = lines[:next(i for i, ln in enumerate(lines) if ln.startswith("what the spec"))]
    assert title[0] == "my-experimental-resnet-variant-with-a-long-name:"
    assert all(ln.startswith("  ") and len(ln) <= 80 for ln in title[1:]), title


def test_a_gpu_cell_cut_to_fit_keeps_its_count(estimates):
    """At 80 columns the quickstart's estimate-only rows showed "RTX-A6000 …" and "A100-80GB …":
    the count, which says how many GPUs the price buys, was what got cut."""
    rows = _rows(_render(estimates["quickstart"]))
    assert not any(re.search(r"…\s+(on-demand|spot)", r) for r in rows), rows  # a GPU cell never ends cut
    assert any(re.search(r"\w… x\d+\s+(on-demand|spot)", r) for r in rows), rows  # cut names keep " xN"
