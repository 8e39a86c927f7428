"""The local CPU baseline: probe parsing, extrapolation, caching, failures, and one real probe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.estimate import baseline as bl
from launcher.estimate.baseline import measure_baseline, probe_batch_size
from launcher.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))


def _spec(model="resnet18", batch=32, samples=1000, image=64):
    return parse_spec(f"name: b\nworkload: {{model: {model}, image_size: {image}, num_classes: 10, "
                      f"samples_per_epoch: {samples}, epochs: 2, batch_size: {batch}, precision: bf16}}\n")


class FakeRunner:
    def __init__(self, sps=40.0, rc=0, extra="", exc=None):
        self.calls, self.sps, self.rc, self.extra, self.exc = [], sps, rc, extra, exc

    def __call__(self, cmd, timeout):
        self.calls.append((cmd, timeout))
        if self.exc:
            raise self.exc
        cfg = json.loads(Path(cmd[cmd.index("--config") + 1]).read_text())
        self.config = cfg
        lines = ["some log line", json.dumps({"event": "start", "time": 1.0})]
        if self.sps:
            lines.append(json.dumps({"event": "probe", "time": 2.0, "samples_per_second": self.sps, "steps": 9,
                                     "seconds": 3.2, "device": "cpu", "precision": cfg["precision"],
                                     "batch_size": cfg["batch_size"]}))
        return self.rc, "\n".join(lines) + self.extra, "boom: traceback tail"


def test_probe_is_parsed_extrapolated_and_bounded():
    r = FakeRunner(sps=40.0)
    b = measure_baseline(_spec(), probe_seconds=5, runner=r)
    assert b.measured and not b.cached
    assert b.samples_per_second == 40.0 and b.seconds == pytest.approx(2000 / 40.0)
    cmd, timeout = r.calls[0]
    assert cmd[1].endswith("payloads/train.py") and cmd[cmd.index("--device") + 1] == "cpu"
    assert cmd[cmd.index("--probe-seconds") + 1] == "5" and "--warmup-steps" in cmd
    assert timeout == pytest.approx(5 + bl.HARD_TIMEOUT_MARGIN_S)
    assert r.config["precision"] == bl.cpu_precision(_spec().workload) and r.config["compile"] is False
    assert r.config["batch_size"] <= 32


def test_result_is_cached_per_machine_and_workload():
    r = FakeRunner(sps=12.5)
    measure_baseline(_spec(), probe_seconds=5, runner=r)
    again = measure_baseline(_spec(), probe_seconds=5, runner=r)
    assert again.cached and again.samples_per_second == 12.5 and len(r.calls) == 1
    measure_baseline(_spec(model="resnet50"), probe_seconds=5, runner=r)  # other workload: new probe
    assert len(r.calls) == 2
    measure_baseline(_spec(), probe_seconds=5, runner=r, use_cache=False)
    assert len(r.calls) == 3


@pytest.mark.parametrize("runner,why", [
    (FakeRunner(sps=None, rc=1), "boom"),
    (FakeRunner(sps=None, rc=0, extra="\n" + json.dumps({"event": "error", "time": 1, "message": "OOM"})), "OOM"),
    (FakeRunner(exc=subprocess.TimeoutExpired("x", 65)), "did not finish"),
    (FakeRunner(exc=FileNotFoundError(2, "No such file")), "could not start"),
])
def test_failed_probe_falls_back_to_the_model(runner, why):
    b = measure_baseline(_spec(), probe_seconds=5, runner=runner)
    assert not b.measured and why in b.note and "predicted from the model" in b.note
    assert b.samples_per_second and b.samples_per_second > 0 and b.seconds > 0


def test_without_torch_says_so(monkeypatch):
    monkeypatch.setattr(bl, "_torch_version", lambda: None)
    b = measure_baseline(_spec())
    assert not b.measured and b.note.startswith("PyTorch not installed: CPU baseline from the model only")
    assert b.samples_per_second > 0


def test_probe_batch_is_a_small_power_of_two():
    big = _spec(model="vgg16", batch=128, image=224)
    b = probe_batch_size(big, 15, 2)
    assert b & (b - 1) == 0 and 4 <= b < 128
    assert probe_batch_size(_spec(model="resnet18", batch=2), 15, 64) == 2


def test_device_and_cores_are_reported():
    assert bl.cpu_name() and bl.cpu_cores() >= 1
    assert len(bl.fingerprint()) == 16


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "payloads" / "train.py").exists(), reason="payload not present")
def test_real_cpu_probe_quickstart():
    pytest.importorskip("torch")
    spec = parse_spec("name: q\nworkload: {model: tinycnn, image_size: 32, num_classes: 10, in_channels: 1,"
                      " dataset: synthetic, samples_per_epoch: 1797, epochs: 8, batch_size: 64, precision: fp32}\n")
    b = measure_baseline(spec, probe_seconds=1.0, python=sys.executable)
    assert b.measured, b.note
    assert b.samples_per_second > 1 and b.seconds == pytest.approx(1797 * 8 / b.samples_per_second)


def test_cpu_probe_precision_follows_native_bf16():
    from launcher.estimate.baseline import cpu_precision
    from launcher.spec import parse_spec

    bf16 = parse_spec("name: a\nworkload: {precision: bf16}\n").workload
    fp16 = parse_spec("name: a\nworkload: {precision: fp16}\n").workload
    assert cpu_precision(bf16, "flags : fpu avx2 avx512f avx512_bf16") == "bf16"
    assert cpu_precision(bf16, "flags : fpu avx2 amx_bf16 amx_tile") == "bf16"
    assert cpu_precision(bf16, "flags : fpu avx2 avx512f") == "fp32"  # emulated bf16 is slower
    assert cpu_precision(fp16, "flags : avx512_bf16") == "fp32"


def test_refresh_measures_again_and_replaces_the_cached_figure():
    measure_baseline(_spec(), probe_seconds=5, runner=FakeRunner(sps=40.0))
    again = FakeRunner(sps=55.0)
    b = measure_baseline(_spec(), probe_seconds=5, runner=again, refresh=True)
    assert len(again.calls) == 1 and b.samples_per_second == 55.0 and not b.cached
    hit = measure_baseline(_spec(), probe_seconds=5, runner=FakeRunner(sps=1.0))
    assert hit.cached and hit.samples_per_second == 55.0


def _finished(spec, provider="local", device="cpu", sps=98.1, status="ok"):
    from types import SimpleNamespace

    return SimpleNamespace(id="r5c0ffe", provider=provider, spec=spec.model_dump(mode="json"),
                           result={"start": {"device": device},
                                   "end": {"status": status, "samples_per_second": sps}})


def test_a_finished_local_cpu_run_teaches_the_cpu_row():
    """Issue 15 Part 6: a local CPU run measured 98.1 samples/s, yet the next estimate's CPU row
    kept an older probe (65.6, taken on a busy machine). The newer of probe and run is shown."""
    import time

    from launcher.estimate.api import full_estimate

    spec = _spec()
    measure_baseline(spec, runner=FakeRunner(sps=65.6))  # the older probe
    time.sleep(0.01)
    assert bl.record_finished_cpu(_finished(spec))["run_id"] == "r5c0ffe"
    cpu = full_estimate(spec, baseline=False, providers=("aws",))["baseline"]
    assert cpu["measured"] and cpu["samples_per_second"] == 98.1
    assert cpu["basis"] == "measured in run r5c0ffe, today" and "measured in run r5c0ffe, today" in cpu["note"]
    hit = measure_baseline(spec, runner=FakeRunner(sps=1.0))  # a plain estimate: the run, no probe
    assert hit.cached and hit.samples_per_second == 98.1
    fresh = measure_baseline(spec, runner=FakeRunner(sps=70.0), refresh=True)  # --refresh-baseline
    assert not fresh.cached and fresh.samples_per_second == 70.0
    assert bl.cached_baseline(spec).samples_per_second == 70.0  # the newer probe now wins
    # not this machine's CPU, not the job's batch, or not trained to its end: nothing learned
    assert bl.record_finished_cpu(_finished(spec, provider="ssh")) is None
    assert bl.record_finished_cpu(_finished(spec, device="cuda")) is None
    assert bl.record_finished_cpu(_finished(spec, status="interrupted")) is None
    bl.record_finished_cpu(_finished(_spec(batch=64), sps=120.0))
    assert bl.cached_baseline(_spec(batch=64)).samples_per_second == 120.0
    assert bl.cached_baseline(spec).samples_per_second == 70.0


def test_calibrate_reset_drops_the_cpu_runs_too_and_keeps_the_probes():
    """`calibrate --reset` dropped the GPU runs but not a local CPU run recorded in the baseline
    cache, so the CPU row still said 'measured in run r5c0ffe' after the reset."""
    import time

    from typer.testing import CliRunner

    from launcher.cli import app

    spec = _spec()
    measure_baseline(spec, runner=FakeRunner(sps=65.6))  # a probe: kept
    time.sleep(0.01)
    bl.record_finished_cpu(_finished(spec))
    bl.record_finished_cpu(_finished(_spec(batch=64), sps=120.0))
    assert bl.cached_baseline(spec).samples_per_second == 98.1
    res = CliRunner().invoke(app, ["calibrate", "--reset"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("dropped 2 measured CPU runs;") and "CPU probes kept" in res.output, res.output
    assert bl.cached_baseline(spec).samples_per_second == 65.6  # the probe, not the run
    assert bl.cached_baseline(_spec(batch=64)) is None
    res = CliRunner().invoke(app, ["calibrate", "--reset", "--json"])
    assert json.loads(res.output) == {"reset": True, "runs_dropped": 0, "cpu_runs_dropped": 0}


def test_no_baseline_and_dry_run_use_the_cached_measurement(monkeypatch):
    from launcher.estimate.api import for_machine, full_estimate

    spec = _spec()
    assert bl.cached_baseline(spec) is None
    full = full_estimate(spec, baseline=False, providers=("aws",))
    assert full["baseline"]["measured"] is False  # nothing cached yet: predicted
    measure_baseline(spec, runner=FakeRunner(sps=40.0))
    full = full_estimate(spec, baseline=False, providers=("aws",))
    assert full["baseline"]["measured"] and full["baseline"]["cached"]
    assert full["baseline"]["samples_per_second"] == 40.0 and "(cached)" in full["baseline"]["note"]
    row = for_machine(spec, "local", None, None, spot=False, baseline=False)  # what --dry-run prices
    assert row["basis"] == "cpu measured" and row["samples_per_second"] == 40.0


def test_a_probe_on_a_busy_machine_is_flagged(monkeypatch):
    cores = bl.cpu_cores()
    monkeypatch.setattr(bl, "load_average", lambda: cores + 3.0)
    b = measure_baseline(_spec(), probe_seconds=5, runner=FakeRunner(sps=40.0))
    assert b.busy and "busy" in b.note and "--refresh-baseline" in b.note
    assert measure_baseline(_spec(), probe_seconds=5, runner=FakeRunner()).busy  # the cached figure stays flagged
    monkeypatch.setattr(bl, "load_average", lambda: cores - 0.5)
    quiet = measure_baseline(_spec(), probe_seconds=5, runner=FakeRunner(sps=40.0), refresh=True)
    assert not quiet.busy and "busy" not in quiet.note


@pytest.mark.parametrize("change", ["cpu", "cores", "torch", "workload"])
def test_cache_key_is_cpu_model_cores_torch_version_and_workload(monkeypatch, change):
    spec = _spec()
    measure_baseline(spec, probe_seconds=5, runner=FakeRunner(sps=40.0))
    assert bl.cached_baseline(spec, probe_seconds=5) is not None
    if change == "cpu":
        monkeypatch.setattr(bl, "cpu_name", lambda: "Another CPU 9000")
    elif change == "cores":
        monkeypatch.setattr(bl, "cpu_cores", lambda: bl.os.cpu_count() + 7)
    elif change == "torch":
        monkeypatch.setattr(bl, "_torch_version", lambda: "0.0.1")
    else:
        spec = _spec(image=96)
    assert bl.cached_baseline(spec, probe_seconds=5) is None


def _interrupting_runner(cmd, timeout):
    """The probe as the runner starts it, with a Ctrl-C (SIGINT to the probe, as the terminal sends
    it to the whole foreground group) once the payload said it started."""
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if '"event": "start"' in line or '"event":"start"' in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(lines) + out, err


@pytest.mark.skipif(not (ROOT / "payloads" / "train.py").exists(), reason="payload not present")
def test_a_probe_cut_short_by_ctrl_c_is_neither_used_nor_cached():
    """Ctrl-C during `gpujob run`'s baseline probe stopped the probe after a step or two, and that
    figure (a tenth of the real speed) was cached as this machine's baseline for every later run."""
    pytest.importorskip("torch")
    spec = parse_spec("name: q\nworkload: {model: tinycnn, image_size: 32, num_classes: 10, in_channels: 1,"
                      " dataset: synthetic, samples_per_epoch: 1797, epochs: 8, batch_size: 64, precision: fp32}\n")
    b = measure_baseline(spec, probe_seconds=60.0, python=sys.executable, runner=_interrupting_runner)
    assert not b.measured and "interrupted" in b.note, b.note
    assert bl.cached_baseline(spec, probe_seconds=60.0) is None


def test_the_probe_is_announced_only_when_one_runs(monkeypatch, tmp_path):
    """`gpujob estimate` said "measuring this machine's CPU" and then, without PyTorch, printed a
    model-predicted row (or failed): the line is said just before a probe starts, and never for a
    cached figure or where no probe can run; without torch the CPU row is the model's, flagged."""
    from typer.testing import CliRunner

    from launcher.cli import app

    spec = tmp_path / "job.yaml"
    spec.write_text("name: b\nworkload: {model: resnet18, image_size: 64, num_classes: 10, samples_per_epoch: 1000,"
                    " batch_size: 32}\nresources: {accelerators: L4:1}\n")
    cli = CliRunner()
    monkeypatch.setattr(bl, "_torch_version", lambda: None)  # a gpujob installed without the train extra
    res = cli.invoke(app, ["estimate", str(spec), "--json"])
    assert res.exit_code == 0, res.output
    assert "measuring" not in res.output
    base = json.loads(res.output[res.output.index("{"):])["baseline"]
    assert base["measured"] is False and "PyTorch not installed" in base["note"]
    monkeypatch.setattr(bl, "_torch_version", lambda: "2.13.0")
    runner = FakeRunner(sps=40.0)
    monkeypatch.setattr(bl, "_default_runner", runner)
    res = cli.invoke(app, ["estimate", str(spec), "--probe-seconds", "3"])
    assert res.exit_code == 0 and len(runner.calls) == 1
    assert "measuring this machine's CPU (~3 s" in res.output
    res = cli.invoke(app, ["estimate", str(spec), "--probe-seconds", "3"])  # cached now: nothing to announce
    assert res.exit_code == 0 and len(runner.calls) == 1 and "measuring" not in res.output


def test_the_summary_says_how_the_cpu_figure_was_obtained(monkeypatch):
    """The sentence read "saving 50.8 days over this CPU (50.8 days, measured)", also when
    --no-baseline reused a cached figure: it now names the CPU's time once and its basis."""
    from launcher.estimate.api import full_estimate

    monkeypatch.setattr(bl, "load_average", lambda: 0.0)
    spec = _spec(samples=10_000_000)
    sentence = full_estimate(spec, baseline=False, providers=("aws",))["summary"]["sentence"]
    assert "this CPU would take" in sentence and "(predicted: no measurement cached)" in sentence
    measure_baseline(spec, runner=FakeRunner(sps=0.5))
    sentence = full_estimate(spec, baseline=False, providers=("aws",))["summary"]["sentence"]
    assert sentence.count("this CPU") == 1 and f"(measured {bl.time.strftime('%Y-%m-%d')}, cached)" in sentence
    monkeypatch.setattr(bl, "_torch_version", lambda: None)
    sentence = full_estimate(spec, baseline=True, providers=("aws",))["summary"]["sentence"]
    assert "(predicted: PyTorch not installed)" in sentence
