"""Runs teach the estimator (launcher/estimate/learned.py) and every estimate carries an error band."""

from __future__ import annotations

import json
import math
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
        id="rabc123", provider="aws", spec=spec.model_dump(mode="json"), machine={"gpu": "H100", "gpu_count": 1},
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
    `--reset` "dropped 0 measured run(s) and your fit". After `gpujob run jobs/quickstart.yaml` (a
    CPU run, which the CPU figure uses at once) it said "no measured runs yet": GPU runs, it means."""
    res = cli.invoke(app, ["calibrate"])
    assert res.exit_code == 0 and res.output.startswith("no measured GPU runs yet: nothing to refit")
    assert "local CPU run needs no refit" in res.output
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


def _host_file(root, name, rows):
    (root / "h200_host").mkdir(parents=True, exist_ok=True)
    (root / "h200_host" / name).write_text(json.dumps({"results": rows}))


def _row(model, sps, total, train, batch=256, samples=1000, **kw):
    return {"model": model, "cache": "cold", "rc": 0, "batch_size": batch, "precision": "bf16", "samples": samples,
            "start": {"device_name": "NVIDIA H200"}, "end": {"samples_per_second": sps},
            "report": {"actual": {"total_seconds": total, "train_seconds": train}}, **kw}


def test_the_host_repeat_spread_is_the_median_error_of_predicting_one_run_from_another(tmp_path):
    from launcher.estimate import repeats

    # resnet50 b256 on three hosts (steps of ~36 ms): median 7,084; tinycnn (steps of ~3 ms) on two
    _host_file(tmp_path, "a.json", [_row("resnet50", 7084.0, 90.0, 60.0), _row("tinycnn", 80000.0, 40.0, 20.0),
                                    _row("resnet50", 1.0, 1.0, 1.0, rc=1),  # failed: left out
                                    _row("resnet50", 7500.0, 50.0, 20.0, cache="warm"),  # warm: left out
                                    # an A/B row (a condition): its samples/s counts (the bytecode does not
                                    # touch the steady rate), its overhead and total do not
                                    _row("resnet50", 7084.0, 300.0, 20.0, condition="pyc")])
    _host_file(tmp_path, "b.json", [_row("resnet50", 7140.0, 80.0, 60.0), _row("tinycnn", 70000.0, 50.0, 20.0),
                                    _row("mlp", 1e5, 10.0, 5.0)])  # one run only: no spread
    _host_file(tmp_path, "c.json", [_row("resnet50", 6989.0, 100.0, 60.0, samples=2000)])
    doc = repeats.fit(repeats.runs(tmp_path))
    long, short = doc["samples_per_second"]["long_step"], doc["samples_per_second"]["short_step"]
    # every ordered pair (a, b) of one job's runs gives |b / a - 1|: resnet50's 7084, 7084 (the A/B
    # row), 7140 and 6989 give twelve: 0 twice, 1 - 7084/7140 and 7140/7084 - 1 twice each,
    # 1 - 6989/7084 and 7084/6989 - 1 twice each, 1 - 6989/7140 and 7140/6989 - 1; the band is their
    # median, the 6th and 7th sorted: 7140/7084 - 1 (0.79%) and 1 - 6989/7084 (1.34%)
    assert long == {"max": round(7140 / 6989 - 1, 4), "median": round((7140 / 7084 - 1 + 1 - 6989 / 7084) / 2, 4),
                    "n_groups": 1, "n_runs": 4}
    assert short["max"] == round(80000 / 70000 - 1, 4) and short["n_runs"] == 2
    # overhead = total - samples at the steady rate (start-up, compile, end; not total - the report's
    # train_seconds, the loop with its compile): resnet50 90 - 1000/7084, 80 - 1000/7140, 100 - 2000/6989
    over = [90 - 1000 / 7084, 80 - 1000 / 7140, 100 - 2000 / 6989]
    tiny = [40 - 1000 / 80000, 50 - 1000 / 70000]  # the largest pair of a group: its largest / smallest - 1
    assert doc["overhead_seconds"]["max"] == round(max(max(o) / min(o) - 1 for o in (over, tiny)), 4)
    assert doc["overhead_seconds"]["n_groups"] == 2
    # totals compare runs of the same sample count only (the 2,000-sample resnet50 run is alone):
    # resnet50 90, 80 s -> 90 / 80 - 1; tinycnn 40, 50 s -> 50 / 40 - 1, the largest
    assert doc["total_seconds"]["max"] == round(50 / 40 - 1, 4) and doc["total_seconds"]["n_runs"] == 4


def test_a_measured_signature_takes_the_host_repeat_band_by_step_time(monkeypatch):
    from launcher.estimate import bands

    doc = {"samples_per_second": {"short_step_s": 0.02,
                                  "long_step": {"median": 0.017, "max": 0.22, "n_groups": 5, "n_runs": 14},
                                  "short_step": {"median": 0.15, "max": 0.4, "n_groups": 5, "n_runs": 21}},
           "overhead_seconds": {"median": 0.18, "max": 0.37, "n_runs": 35}}
    monkeypatch.setattr(bands, "host_repeats", lambda: doc)
    seen = {"samples_per_second": 7084.0}
    err, basis = bands.band("hopper", "per-operation", seen, step_s=256 / 7084.0)
    assert err == 0.017 and "20 ms or more" in basis and "14 runs of 5 jobs" in basis and "largest 22%" in basis
    assert bands.band("hopper", "per-operation", seen, step_s=0.003)[0] == 0.15
    assert bands.band("hopper", "per-operation", seen)[0] == 0.15  # step unknown: the wider band
    # a measured local total: the overhead's share carries the overhead spread, training the samples/s
    # band; they add (one host's errors go the same way)
    band, basis = bands.local_total_band(60.0, 40.0, 0.017, measured=True)
    assert band == pytest.approx(0.18 * 0.4 + 0.017 * 0.6) and "18%" in basis and "up to 37%" in basis
    assert "35 runs" in basis


def test_the_bundled_repeat_band_is_narrow_for_a_gpu_bound_job():
    """The packaged host_repeats.json: resnet50-like steps (>= 20 ms) differ by a few percent
    between hosts, inside the model's own leave-one-model-out band."""
    from launcher.estimate import bands

    err, _ = bands.band("hopper", "per-operation", {"samples_per_second": 7084.0}, step_s=0.036)
    assert 0 < err < 0.05 and err < bands.band("hopper", "per-operation")[0]


def test_an_estimate_with_a_recorded_run_shows_the_narrow_band_in_json():
    spec = _spec()
    learned.record_run("r1a2b3c", spec.workload, "H200", 1, 7084.0, now=time.time())
    (spec_file := __import__("pathlib").Path("job.yaml")).write_text(json.dumps(spec.model_dump(mode="json")))
    out = cli.invoke(app, ["estimate", str(spec_file), "--no-baseline", "--top", "1000", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["candidates"]
    h200 = [c for c in rows if c["gpu"] == "H200" and c["gpu_count"] == 1]
    model = [c for c in rows if c["gpu"] == "H100" and c["gpu_count"] == 1]
    assert h200 and model and all(c["measured"]["run_id"] == "r1a2b3c" for c in h200)
    assert all(c["error_band"] < 0.05 and "different H200 hosts" in c["band_basis"] for c in h200)
    assert all(c["error_band"] > h200[0]["error_band"] for c in model)  # no run there: the model's band


def test_a_local_run_of_a_measured_signature_uses_its_rate_and_the_repeat_bands():
    from launcher.estimate import bands
    from launcher.estimate.api import for_machine

    spec = _spec()
    before = for_machine(spec, "local", None, 0.0, spot=False, baseline=False, local_gpu="H200")
    learned.record_run("r1a2b3c", spec.workload, "H200", 1, 7084.0, now=time.time())
    after = for_machine(spec, "local", None, 0.0, spot=False, baseline=False, local_gpu="H200")
    assert after["samples_per_second"] == 7084.0 and after["basis"] == "gpu measured"
    assert "measured in run r1a2b3c" in after["note"] and "between" in after["total_band_basis"]
    over = bands.host_repeats()["overhead_seconds"]["median"]
    sps = bands.band("hopper", "per-operation", {}, step_s=256 / 7084.0)[0]
    share = after["overhead_seconds"] / after["total_seconds"]
    assert after["total_error_band"] == pytest.approx(over * share + sps * (1 - share), abs=1e-4)
    assert before["basis"] == "gpu model" and "never fitted" in before["total_band_basis"]


def test_the_same_host_spread_groups_by_file_and_leaves_ab_rows_out(tmp_path):
    from launcher.estimate import repeats

    # host a: resnet50 twice (overheads 90 and 80 s less 1000 samples at 7,084/s; totals 90 and 80 s);
    # its bytecode A/B rows (a condition) and host b's run are not same-host repeats
    _host_file(tmp_path, "a.json", [_row("resnet50", 7084.0, 90.0, 60.0), _row("resnet50", 7084.0, 80.0, 60.0),
                                    _row("vgg16", 3000.0, 50.0, 20.0, condition="pyc"),
                                    _row("vgg16", 3000.0, 70.0, 20.0, condition="nopyc")])
    _host_file(tmp_path, "b.json", [_row("resnet50", 7084.0, 200.0, 60.0)])
    same = repeats.fit(repeats.runs(tmp_path))["same_host"]
    steady = 1000 / 7084
    up, down = (90 - steady) / (80 - steady) - 1, 1 - (80 - steady) / (90 - steady)  # the pair both ways
    assert same["overhead_seconds"] == {"max": round(up, 4), "median": round((up + down) / 2, 4),
                                        "n_groups": 1, "n_runs": 2}
    assert same["total_seconds"]["max"] == round(90 / 80 - 1, 4) and same["total_seconds"]["n_runs"] == 2


def test_a_finished_local_run_records_its_compile_and_time_outside_the_loop():
    spec = _spec()
    rec = SimpleNamespace(
        id="rloc123", provider="local", spec=spec.model_dump(mode="json"), machine={"gpu": "H200", "gpu_count": 1},
        estimate={}, job_started_at=100.0, launched_at=95.0, ended_at=195.0,
        billed_seconds=lambda: 100.0,
        result={"start": {"device": "cuda", "time": 112.0, "world_size": 1},
                "end": {"status": "ok", "samples_per_second": 5000.0, "samples": 250000, "elapsed": 70.0,
                        "warmup_seconds": 22.0}})
    entry = learned.record_finished(rec)
    # compile = loop 70 s - 250,000 / 5,000 = 20 s; outside = total 100 s - loop 70 s = 30 s
    assert entry["compile_s"] == 20.0 and entry["outside_s"] == 30.0 and entry["host"] == learned.this_host()
    assert entry["compile_cache"] is None and entry["compile_cache_dirs"] == []  # a start event that did not say
    said = {**rec.result, "start": {**rec.result["start"], "compile_cache": "warm", "compile_cache_dirs": ["/c/ind"]}}
    warm = learned.record_finished(SimpleNamespace(**{**vars(rec), "id": "rwarm", "result": said}))
    assert warm["compile_cache"] == "warm" and warm["compile_cache_dirs"] == ["/c/ind"]
    assert learned.measured_for(spec.workload, "H200", 1)["compile_cache"] == "warm"  # kept in the store
    cloud = learned.record_finished(SimpleNamespace(**{**vars(rec), "id": "rcloud", "provider": "aws"}))
    assert cloud["compile_s"] is None and cloud["outside_s"] is None  # another machine: nothing to reuse here


def test_a_local_estimate_reuses_the_recorded_runs_own_start_up_and_compile(monkeypatch):
    from launcher.estimate import bands
    from launcher.estimate.api import for_machine

    monkeypatch.setattr(bands, "host_repeats", lambda: {
        "samples_per_second": {"short_step_s": 0.02, "long_step": {"median": 0.017, "n_groups": 5, "n_runs": 14}},
        "overhead_seconds": {"median": 0.37, "n_runs": 35},
        "same_host": {"overhead_seconds": {"median": 0.1, "max": 0.2, "n_groups": 1, "n_runs": 2}}})
    spec = _spec()
    learned.record_run("r1a2b3c", spec.workload, "H200", 1, 5000.0, compile_s=40.0, outside_s=15.0,
                       host=learned.this_host(), now=time.time())
    got = for_machine(spec, "local", None, 0.0, spot=False, baseline=False, local_gpu="H200")
    # 100,000 samples / 5,000 samples/s = 20 s of training + 15 s outside + 40 s compile = 75 s
    assert got["total_seconds"] == pytest.approx(75.0) and got["warmup_seconds"] == 40.0
    assert "start-up 15.0 s and compile 40.0 s measured in run r1a2b3c" in got["note"]
    # band: the one-host overhead spread (10%) on 55 / 75 of it, the samples/s band (1.7%) on 20 / 75
    assert got["total_error_band"] == pytest.approx(0.1 * 55 / 75 + 0.017 * 20 / 75, abs=1e-4)
    assert "one host" in got["total_band_basis"]
    # another signature (batch 128) does not pick them up; neither does a run recorded on another machine
    other = for_machine(_spec(batch_size=128), "local", None, 0.0, spot=False, baseline=False, local_gpu="H200")
    assert "r1a2b3c" not in other["note"] and other["warmup_seconds"] != 40.0
    learned.record_run("r1a2b3c", spec.workload, "H200", 1, 5000.0, compile_s=40.0, outside_s=15.0,
                       host="another-machine", now=time.time())
    elsewhere = for_machine(spec, "local", None, 0.0, spot=False, baseline=False, local_gpu="H200")
    assert elsewhere["samples_per_second"] == 5000.0 and elsewhere["total_seconds"] != pytest.approx(75.0)
    assert "compile 40.0 s" not in elsewhere["note"] and "between" in elsewhere["total_band_basis"]


def test_a_local_estimate_says_whether_the_reused_compile_ran_on_a_cold_cache(monkeypatch, tmp_path):
    from launcher.estimate.api import for_machine

    spec = _spec()

    def estimate(cache, dirs=()):
        learned.record_run("r1a2b3c", spec.workload, "H200", 1, 5000.0, compile_s=40.0, outside_s=15.0,
                           host=learned.this_host(), now=time.time(), compile_cache=cache,
                           compile_cache_dirs=list(dirs))
        return for_machine(spec, "local", None, 0.0, spot=False, baseline=False, local_gpu="H200")

    # 100,000 samples / 5,000 samples/s = 20 s of training + 15 s outside + 40 s compile = 75 s
    cold = estimate("cold")
    assert cold["total_seconds"] == pytest.approx(75.0)
    assert "compile 40.0 s measured in run r1a2b3c (compile cache cold)" in cold["note"]
    unknown = estimate(None)  # a row written before payloads told: reused, with the old hedge
    assert unknown["total_seconds"] == pytest.approx(75.0) and "may have been warm: not recorded" in unknown["note"]
    cache = tmp_path / "inductor"
    (cache / "ab").mkdir(parents=True)
    (cache / "ab" / "c.so").write_bytes(b"x")
    still = estimate("warm", [str(cache)])  # the warm cache still holds files: the next run compiles warm too
    assert still["total_seconds"] == pytest.approx(75.0)
    assert "(compile cache warm, and it still holds files" in still["note"]
    assert "one host" in still["total_band_basis"]
    (cache / "ab" / "c.so").unlink()
    gone = estimate("warm", [str(cache)])  # emptied (a reboot clears /tmp): its warm compile says nothing of the next
    assert gone["warmup_seconds"] != 40.0 and gone["warmup_seconds"] > 0  # the fit's cold compile
    assert gone["total_seconds"] == pytest.approx(20.0 + 15.0 + gone["warmup_seconds"])
    assert "start-up 15.0 s measured in run r1a2b3c (its compile, 40.0 s, ran on a warm compile cache" in gone["note"]
    assert "one host" not in gone["total_band_basis"]  # only half the overhead is this run's own
