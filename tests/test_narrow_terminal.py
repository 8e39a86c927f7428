"""Tables on an 80-column terminal (README walk-through, tmux at 80 columns): `gpujob gpus` cut
every price pair to "2.74/…" and GPU names to "A100-8…", `gpujob cost` showed "prov…", "succ…",
"quic…", `gpujob ls` broke the start time over two lines, and the dry-run plan cut the AMI's SSM
parameter. A table wider than the terminal is now drawn in the estimate's narrow style (no column
rules, one space between columns), long names and values wrap instead of being cut."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.cells import cell_len
from rich.console import Console

from launcher.catalog import load_catalog, show
from launcher.catalog.listing import gpus_result
from launcher.costs import cost_report
from launcher.render import render_catalog, render_plan, render_runs
from launcher.render_cost import render_cost
from launcher.render_gpus import render_gpu_offers, render_gpus
from launcher.store import Store


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))


def _at_80(render, *args) -> list[str]:
    out = io.StringIO()
    render(Console(file=out, width=80, force_terminal=True, color_system=None), *args)
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    return lines


def test_gpus_at_80_columns_shows_every_price_and_name_whole():
    lines = _at_80(render_gpus, gpus_result(load_catalog(), None))
    text = "\n".join(lines)
    assert "…" not in text, text
    assert re.search(r"^A100-80GB +80 +312 +\d+\.\d\d/\d+\.\d\d", text, re.M), text
    assert "┃" not in text and "│" not in text  # the narrow style: no column rules


def test_every_offer_of_a_gpu_and_the_catalog_at_80_columns_cut_no_instance_type():
    """`gpujob gpus A100` showed 'p4d.24xl…' and `gpujob catalog show --gpu H200` 'p5en.4…',
    'provi…', 'us-we…': the instance types wrap now, whole."""
    offers = _at_80(render_gpu_offers, gpus_result(load_catalog(), "A100", one=True))
    assert "…" not in "\n".join(offers) and any(line.split()[1:2] == ["p4d.24xlarge"] for line in offers), offers
    cat = load_catalog()
    lines = _at_80(render_catalog, cat.provenance, show(gpu="H200", provider="aws"))
    assert "…" not in "\n".join(lines) and "provider" in lines[0] + lines[1], lines


def _runs(store: Store) -> None:
    now = time.time()
    for run_id, name in (("r1a2b3c4d", "quickstart-digits"), ("r5e6f7a8b", "vgg16-imagenet-1epoch")):
        store.create_run(run_id, name, "aws", spec_path=None, spec_text=None, spec={}, provider_config={})
        store.update_run(run_id, state="succeeded", created_at=now - 600, launched_at=now - 590, ended_at=now - 10,
                         price_per_hour=3.06, estimate={"total_seconds": 500, "total_usd": 0.5},
                         machine={"provider": "aws", "id": "m", "instance_type": "p3.2xlarge", "gpu": "V100",
                                  "gpu_count": 1})


def test_cost_and_ls_at_80_columns_cut_no_cell():
    store = Store()
    _runs(store)
    cost = "\n".join(_at_80(render_cost, cost_report(store)))
    assert "…" not in cost and "r5e6f7a8b" in cost and "succeeded" in cost and "V100 x1" in cost, cost
    assert "│" not in cost  # every table of the report in the same (narrow) style
    runs = _at_80(render_runs, store.list_runs(10))
    assert "…" not in "\n".join(runs)
    assert any(re.search(r"r1a2b3c4d .* 20\d\d-\d\d-\d\d \d\d:\d\d ", line) for line in runs), runs  # one line


def test_dry_run_plan_at_80_columns_wraps_a_long_value_instead_of_cutting_it():
    path = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id"
    lines = _at_80(render_plan, {"plan": {"provider": "aws", "image": f"SSM parameter {path}"}, "estimate": {}})
    joined = "".join(line.split("│")[-1].strip() for line in lines if "│" in line)
    assert path in joined and "…" not in "\n".join(lines)


def test_estimate_wide_at_80_columns_gives_each_offer_two_lines_not_cut_cells():
    """`gpujob estimate jobs/vgg16.yaml --wide` at 80 columns squeezed 14 columns into cells like
    'p3…', '$3…', '35…'; each row is now the offer, then its figures, none cut. A terminal (or a
    pipe, 180 columns) wide enough for the table still gets the table."""
    from pathlib import Path

    from launcher.jobestimate import full_estimate
    from launcher.render import render_estimate
    from launcher.spec import load_spec

    est = full_estimate(load_spec(Path(__file__).resolve().parent.parent / "jobs" / "vgg16.yaml"), baseline=False,
                        providers=("aws", "gcp", "azure", "lambda", "vast"))
    lines = _at_80(lambda con, e: render_estimate(con, e, wide=True), est)
    text = "\n".join(lines)
    assert "…" not in text, text
    i = lines.index("aws p3.2xlarge us-east-1: V100 x1, on-demand; requested")
    assert re.match(r"  \$3\.06/h  [\d,]+ samples/s  GPU eff\. \d+%  train ", lines[i + 1]), lines[i + 1]
    out = io.StringIO()
    render_estimate(Console(file=out, width=180, color_system=None), est, wide=True)
    assert re.search(r"provider +┃ instance +┃ region .*┃ overhead ┃", out.getvalue()), out.getvalue()
