"""Runs teach the estimator (launcher/estimate/learned.py) and every estimate carries an error band."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.estimate import learned
from launcher.estimate.api import full_estimate
from launcher.spec import parse_spec

cli = CliRunner()
DAY = 86400.0


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _spec(**w):
    workload = {"model": "resnet50", "batch_size": 256, "precision": "bf16", "samples_per_epoch": 100000, **w}
    return parse_spec(json.dumps({"name": "learn", "workload": workload}))


def test_a_run_is_found_again_with_its_age():
    w = _spec().workload
    learned.record_run("r1a2b3c", w, "H100", 1, 5100.0, warmup_s=55.0, startup_s=18.0, now=1000.0)
    hit = learned.measured_for(w, "H100", 1, now=1000.0 + 2.5 * DAY)
    assert hit["run_id"] == "r1a2b3c" and hit["warmup_s"] == 55.0 and hit["startup_s"] == 18.0
    assert hit["label"] == "measured in run r1a2b3c, 2 days ago: 5,100 samples/s"
    # another GPU, count, batch or precision is another case
    assert learned.measured_for(w, "A100", 1) is None and learned.measured_for(w, "H100", 2) is None
    assert learned.measured_for(_spec(batch_size=128).workload, "H100", 1) is None
    assert learned.measured_for(_spec(precision="fp32").workload, "H100", 1) is None


def test_signature_follows_the_work_of_a_step(home):
    base = learned.signature(_spec().workload)
    assert base == learned.signature(_spec(samples_per_epoch=5).workload)  # data size: same step
    assert base != learned.signature(_spec(image_size=128).workload)
    assert base != learned.signature(_spec(num_classes=10).workload)
    (home / "net.py").write_text("import torch\ndef build(n=2):\n    return torch.nn.Linear(4, n)\n")
    f = _spec(model="net.py:build", input_shape=[4], num_classes=2).workload
    sig = learned.signature(f)
    assert sig != learned.signature(_spec(model="net.py:build", input_shape=[4], num_classes=2,
                                          model_args={"n": 2}).workload)
    (home / "net.py").write_text("import torch\ndef build(n=2):\n    return torch.nn.Linear(4, n, bias=False)\n")
    assert learned.signature(f) != sig  # an edited model file is a new model


def test_a_finished_gpu_run_records_itself_and_others_do_not():
    spec = _spec()
    rec = SimpleNamespace(
        id="rabc123", spec=spec.model_dump(mode="json"), machine={"gpu": "H100", "gpu_count": 1},
        estimate={"gpu": "H100", "samples_per_second": 6000.0}, job_started_at=100.0,
        result={"start": {"device": "cuda", "time": 118.5, "world_size": 1},
                "end": {"status": "ok", "samples_per_second": 5400.0, "warmup_seconds": 61.0}})
    entry = learned.record_finished(rec)
    assert entry["startup_s"] == pytest.approx(18.5) and entry["warmup_s"] == 61.0
    assert entry["predicted_samples_per_second"] == 6000.0
    assert learned.measured_for(spec.workload, "H100", 1)["run_id"] == "rabc123"
    cpu = SimpleNamespace(**{**vars(rec), "id": "rcpu", "result": {"start": {"device": "cpu"},
                                                                     "end": {"status": "ok", "samples_per_second": 3}}})
    assert learned.record_finished(cpu) is None
    stopped = SimpleNamespace(**{**vars(rec), "id": "rint",
                                 "result": {"start": {"device": "cuda"}, "end": {"status": "interrupted"}}})
    assert learned.record_finished(stopped) is None


def test_calibrate_fits_the_users_runs_apart_and_reset_drops_them():
    from launcher.catalog.gpus import get_gpu
    from launcher.estimate.flops import workload_cost
    from launcher.estimate.throughput import predict

    spec = _spec()
    cost = workload_cost(spec.workload)
    before = predict(get_gpu("H100"), 1, "bf16", cost, 256, "resnet50").samples_per_second
    learned.record_run("r1", spec.workload, "H100", 1, before * 0.8, predicted_samples_per_second=before)
    learned.record_run("r2", spec.workload, "H100", 1, before * 0.9, predicted_samples_per_second=before)
    res = cli.invoke(app, ["calibrate", "--json"])
    assert res.exit_code == 0, res.output
    factor = json.loads(res.output)["factors"]["hopper/half"]["factor"]
    assert factor == pytest.approx((0.8 * 0.9) ** 0.5, rel=1e-3)
    after = predict(get_gpu("H100"), 1, "bf16", cost, 256, "resnet50")
    assert after.samples_per_second == pytest.approx(before * factor, rel=1e-3) and after.user_factor == factor
    assert predict(get_gpu("A100"), 1, "bf16", cost, 256, "resnet50").user_factor == 1.0  # other arch untouched
    res = cli.invoke(app, ["calibrate", "--reset"])
    assert res.exit_code == 0 and "dropped 2" in res.output
    assert predict(get_gpu("H100"), 1, "bf16", cost, 256, "resnet50").samples_per_second == pytest.approx(before)
    assert learned.load_runs() == []


def test_the_estimate_shows_a_measured_run_and_an_error_band():
    spec = _spec()
    learned.record_run("r9f8e7d", spec.workload, "L4", 1, 321.0, now=time.time() - 3 * DAY)
    est = full_estimate(spec, baseline=False, providers=("aws", "gcp"), top=1000)
    l4 = [c for c in est["candidates"] if c["gpu"] == "L4" and c["gpu_count"] == 1]
    assert l4 and all(c["measured"]["run_id"] == "r9f8e7d" for c in l4)
    assert "measured in run r9f8e7d, 3 days ago" in l4[0]["note"]
    assert all(c["error_band"] is not None and c["error_band"] > 0 and c["band_basis"] for c in est["candidates"])
    others = [c for c in est["candidates"] if c["gpu"] != "L4"]
    assert all(c["measured"] is None for c in others)
    (spec_file := __import__("pathlib").Path("job.yaml")).write_text(json.dumps(spec.model_dump(mode="json")))
    out = cli.invoke(app, ["estimate", str(spec_file), "--no-baseline", "--top", "200"])
    assert out.exit_code == 0, out.output
    assert "measured in run r9f8e7d, 3 days ago" in out.output and "samples/s ±" in out.output


def test_calibrate_with_no_runs_says_so_plainly():
    """A new user's `calibrate` read "0 measured run(s), none with a single-GPU prediction" and
    `--reset` "dropped 0 measured run(s) and your fit"."""
    res = cli.invoke(app, ["calibrate"])
    assert res.exit_code == 0 and res.output.startswith("no measured runs yet: nothing to refit")
    res = cli.invoke(app, ["calibrate", "--reset"])
    assert res.exit_code == 0 and res.output.startswith("nothing to drop; estimates use the bundled")
    assert "(s)" not in res.output


def test_an_estimate_reads_the_users_files_once_and_sees_them_change(monkeypatch):
    """measured_for and user_factor are asked once per GPU type (~90 times an estimate): the runs
    file and the fit are parsed once per process while they stay the same, again when rewritten."""
    from pathlib import Path

    spec = _spec()
    learned.record_run("r1", spec.workload, "L4", 1, 321.0, now=time.time())
    (learned.cache_dir() / learned.FIT_FILE).write_text(json.dumps({"factors": {"ada/half": {"factor": 0.5}}}))
    reads: list[str] = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda p, *a, **k: reads.append(p.name) or real(p, *a, **k))
    full_estimate(spec, baseline=False, providers=("aws", "gcp"))
    assert reads.count(learned.RUNS_FILE) <= 1 and reads.count(learned.FIT_FILE) <= 1
    assert learned.user_factor("ada", "bf16") == 0.5
    learned.record_run("r2", spec.workload, "L4", 1, 400.0, now=time.time() + 1)
    assert learned.measured_for(spec.workload, "L4", 1)["run_id"] == "r2"
    (learned.cache_dir() / learned.FIT_FILE).write_text("{damaged")
    assert learned.user_factor("ada", "bf16") == 1.0


def test_a_language_model_s_measured_run_is_labelled_in_tokens():
    spec = _spec(model="gpt2-124m", batch_size=8, samples_per_epoch=1_000_000)
    learned.record_run("r1b2c3d", spec.workload, "H100", 1, 250_000.0, now=time.time())
    m = learned.measured_for(spec.workload, "H100", 1)
    assert m["label"] == "measured in run r1b2c3d, today: 250,000 tokens/s"
    image = _spec()
    learned.record_run("r4e5f6a", image.workload, "H100", 1, 5_100.0, now=time.time())
    assert learned.measured_for(image.workload, "H100", 1)["label"].endswith("5,100 samples/s")
