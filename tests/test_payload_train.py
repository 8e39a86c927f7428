"""payloads/train.py end to end on the CPU: learning, protocol, probe, checkpoints, signals, errors."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from payloads.cpu import cpu_precision
from payloads.protocol import parse_line

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "payloads" / "train.py")
# Quick digits job: 16x16 tinycnn; ~2 s of training on two cores.
DIGITS = ["--device", "cpu", "--model", "tinycnn", "--dataset", "digits", "--image-size", "16", "--in-channels", "1",
          "--num-classes", "10", "--precision", "fp32", "--lr", "0.05", "--batch-size", "64",
          "--samples-per-epoch", "1797"]


def train(args, tmp_path=None, timeout=120, **kw):
    cmd = [sys.executable, TRAIN, *args]
    if tmp_path is not None:
        cmd += ["--output-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    events = [e for e in map(parse_line, proc.stdout.splitlines()) if e]
    return proc, events


def of(events, kind):
    return [e for e in events if e["event"] == kind]


def test_learns_digits_and_writes_outputs(tmp_path):
    proc, events = train([*DIGITS, "--epochs", "3", "--log-every", "5"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    start, end = of(events, "start")[0], of(events, "end")[0]
    assert start["world_size"] == 1 and start["device"] == "cpu" and start["compile"] is False
    assert start["compile_cache"] is None and start["compile_cache_dirs"] == []  # not compiling: no cache to tell
    assert start["total_samples"] == 3 * 1797 and start["resumed_from_step"] is None
    steps = of(events, "step")
    assert steps[-1]["loss"] < steps[0]["loss"] * 0.5
    epochs = of(events, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert end["status"] == "ok" and end["accuracy"] > 0.8, end
    assert end["samples_per_second"] > 0 and end["steps"] == steps[-1]["step"]
    for e in events:  # every protocol line carries event + time
        assert isinstance(e["time"], float) and e["time"] > 1e9
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    assert (tmp_path / "model.pt").exists() and (tmp_path / "checkpoints" / "last.pt").exists()
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name != "last.pt"]  # no temp leftovers


def test_config_file_and_flag_override(tmp_path):
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps({"model": "mlp", "image_size": 8, "num_classes": 10, "in_channels": 1, "dataset": "digits",
                               "samples_per_epoch": 256, "epochs": 1, "batch_size": 32, "precision": "fp32",
                               "learning_rate": 0.1, "compile": None, "channels_last": False, "seed": 1,
                               "checkpoint_every_s": 600, "max_seconds": None, "output_dir": str(tmp_path / "o")}))
    proc, events = train(["--config", str(cfg), "--batch-size", "64", "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr
    start = of(events, "start")[0]
    assert start["model"] == "mlp" and start["batch_size"] == 64 and start["channels_last"] is False
    assert (tmp_path / "o" / "metrics.json").exists()


def test_resume_continues_exactly(tmp_path):
    common = [*DIGITS, "--samples-per-epoch", "768", "--epochs", "1", "--log-every", "1", "--seed", "3"]
    full, ev_full = train(common, tmp_path / "full")
    assert full.returncode == 0, full.stderr
    first, ev_first = train([*common, "--max-steps", "5"], tmp_path / "cut")
    assert first.returncode == 75, first.stderr
    assert of(ev_first, "checkpoint")[-1]["reason"] == "max_steps"
    assert of(ev_first, "end")[0]["status"] == "interrupted"
    second, ev_second = train([*common, "--resume"], tmp_path / "cut")
    assert second.returncode == 0, second.stderr
    assert of(ev_second, "start")[0]["resumed_from_step"] == 5
    losses_full = {e["step"]: e["loss"] for e in of(ev_full, "step")}
    losses_resumed = {e["step"]: e["loss"] for e in of(ev_second, "step")}
    assert min(losses_resumed) == 6
    for step in (6, 7, max(losses_full)):
        assert losses_resumed[step] == pytest.approx(losses_full[step], rel=1e-5, abs=1e-6), step


def test_sigterm_checkpoints_and_exits_75(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, TRAIN, *DIGITS, "--epochs", "200", "--log-every", "1", "--output-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events = []
    try:
        for line in proc.stdout:
            ev = parse_line(line)
            if ev:
                events.append(ev)
                if ev["event"] == "step":
                    proc.send_signal(signal.SIGTERM)
                    break
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [e for e in map(parse_line, rest.splitlines()) if e]
    assert proc.returncode == 75
    ck = of(events, "checkpoint")
    assert ck and ck[-1]["reason"] == "signal" and Path(ck[-1]["path"]).exists()
    assert of(events, "end")[0]["status"] == "interrupted"


def test_probe_prints_one_probe_event(tmp_path):
    proc, events = train(["--device", "cpu", "--model", "mlp", "--image-size", "16", "--batch-size", "8",
                          "--probe-steps", "3", "--warmup-steps", "1", "--num-classes", "10"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (probe,) = of(events, "probe")
    assert probe["steps"] == 3 and probe["warmup_steps"] == 1 and probe["samples_per_second"] > 0
    # the default bf16 runs natively or not at all on a CPU (payloads/cpu.py)
    assert probe["device"] == "cpu" and probe["batch_size"] == 8 and probe["precision"] == cpu_precision("bf16")
    assert not of(events, "checkpoint") and not (tmp_path / "checkpoints").exists()


def test_probe_seconds_bounds_time(tmp_path):
    proc, events = train(["--device", "cpu", "--model", "mlp", "--image-size", "16", "--batch-size", "8",
                          "--probe-seconds", "0.5", "--num-classes", "10", "--precision", "fp32"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (probe,) = of(events, "probe")
    assert probe["seconds"] >= 0.5 and probe["steps"] >= 1


@pytest.mark.parametrize("dataset, needle", [("/nonexistent/data.npz", "no such file"), ("{bad}", "not a .npz")])
def test_bad_dataset_is_exit_2_with_one_line(tmp_path, dataset, needle):
    if dataset == "{bad}":
        dataset = str(tmp_path / "data.txt")
        Path(dataset).write_text("hello")
    proc, events = train(["--device", "cpu", "--model", "mlp", "--dataset", dataset], tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and dataset in lines[0] and needle in lines[0], proc.stderr


def test_malformed_npz_and_good_npz(tmp_path):
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 8, 8)))
    proc, _ = train(["--device", "cpu", "--model", "mlp", "--dataset", str(bad)], tmp_path)
    assert proc.returncode == 2 and "missing array(s) y" in proc.stderr
    good = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez(good, x=rng.integers(0, 255, (40, 12, 12, 3), dtype=np.uint8), y=rng.integers(0, 4, 40))
    proc, events = train(["--device", "cpu", "--model", "mlp", "--dataset", str(good), "--image-size", "8",
                          "--num-classes", "4", "--batch-size", "8", "--samples-per-epoch", "40", "--precision", "fp32"],
                         tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert of(events, "end")[0]["status"] == "ok"


def test_image_folder(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    for c, colour in enumerate(["red", "blue"]):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20, 14), colour).save(tmp_path / "imgs" / f"class{c}" / f"{i}.{'png' if i % 2 else 'jpg'}")
    proc, events = train(["--device", "cpu", "--model", "mlp", "--dataset", str(tmp_path / "imgs"), "--image-size", "8",
                          "--num-classes", "2", "--batch-size", "4", "--samples-per-epoch", "12", "--precision", "fp32"],
                         tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "empty").mkdir()
    proc, _ = train(["--device", "cpu", "--model", "mlp", "--dataset", str(tmp_path / "empty")], tmp_path / "o2")
    assert proc.returncode == 2 and "no JPEG/PNG images" in proc.stderr


def test_bad_arguments_exit_2(tmp_path):
    proc, _ = train(["--model", "alexnet"], tmp_path)
    assert proc.returncode == 2
    cfg = tmp_path / "c.json"
    cfg.write_text('{"modle": "vgg16"}')
    proc, _ = train(["--config", str(cfg)], tmp_path)
    assert proc.returncode == 2 and "modle" in proc.stderr


def test_runs_as_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "payloads.train", "--device", "cpu", "--model", "mlp", "--image-size",
                           "8", "--batch-size", "4", "--probe-steps", "1", "--warmup-steps", "0", "--num-classes", "3"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert any((parse_line(ln) or {}).get("event") == "probe" for ln in proc.stdout.splitlines())


def test_payloads_never_import_launcher():
    import ast

    for f in (ROOT / "payloads").glob("*.py"):
        tree = ast.parse(f.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] == "launcher"], f


@pytest.mark.parametrize("model", ["tinycnn", "lm"])
def test_a_cpu_run_trains_at_the_precision_the_cpu_probe_measured(tmp_path, model):
    """A bf16 job on this CPU: the probe measures cpu_precision (fp32 without native bf16) and the
    run trains at the same precision, saying so in one line when it is not the job's. Before, the
    run trained in emulated bf16: jobs/tokenlm.yaml probed 361 tokens/s and ran at 51."""
    from launcher.estimate.baseline import cpu_precision as probe_precision
    from launcher.spec import parse_spec

    config = tmp_path / "job.json"
    config.write_text(json.dumps({"model_args": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}}))
    args = (["--model", "tinycnn", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "10"]
            if model == "tinycnn" else
            ["--config", str(config), "--model", "lm", "--vocab-size", "256", "--seq-len", "16"])
    proc, events = train(["--device", "cpu", *args, "--precision", "bf16", "--batch-size", "4",
                          "--max-steps", "1"], tmp_path)
    assert proc.returncode == 75, proc.stderr[-2000:]  # stopped after 1 step, with a checkpoint
    bf16 = parse_spec(f"name: a\nworkload: {{model: {model}, precision: bf16}}\n").workload
    ran = of(events, "start")[0]["precision"]
    assert ran == probe_precision(bf16) == cpu_precision("bf16")
    said = [line for line in proc.stderr.splitlines() if "training in fp32, not bf16" in line]
    assert len(said) == (ran == "fp32"), proc.stderr


def test_a_cpu_run_keeps_bf16_where_the_cpu_has_it(monkeypatch):
    import torch

    from payloads import cpu, runtime

    monkeypatch.setattr(runtime, "cpu_precision", lambda p: cpu.cpu_precision(p, "flags : avx2 amx_bf16"))
    assert runtime.run_precision("bf16", torch.device("cpu")) == ("bf16", None)
    assert runtime.run_precision("fp16", torch.device("cpu")) == ("fp32", "training in fp32, not fp16: fp16 is a "
                                                                  "GPU precision")
    monkeypatch.setattr(runtime, "cpu_precision", lambda p: cpu.cpu_precision(p, "flags : avx2 avx512f"))
    assert runtime.run_precision("bf16", torch.device("cpu")) == (
        "fp32", "training in fp32, not bf16: this CPU has no native bf16 (~10x slower)")
    assert len("[train] " + runtime.run_precision("bf16", torch.device("cpu"))[1]) <= 80  # one line at 80 columns
    assert runtime.run_precision("bf16", torch.device("cuda")) == ("bf16", None)  # a GPU: the job's, untouched


def start_event(args, env, timeout=120):
    """The payload's start event; the process is then stopped (its first step would compile)."""
    proc = subprocess.Popen([sys.executable, TRAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, start_new_session=True)
    try:
        for line in proc.stdout:
            event = parse_line(line)
            if event and event["event"] in ("start", "error"):
                return event
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    return None


@pytest.mark.parametrize("model", ["tinycnn", "lm"])
def test_the_start_event_says_whether_the_compile_cache_was_cold(tmp_path, model):
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"model_args": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}}))
    args = (["--model", "tinycnn", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "10"]
            if model == "tinycnn" else
            ["--config", str(config), "--model", "lm", "--vocab-size", "256", "--seq-len", "16"])
    args = ["--device", "cpu", *args, "--precision", "fp32", "--batch-size", "4", "--compile",
            "--output-dir", str(tmp_path / "out")]
    cache = tmp_path / "inductor"
    (cache / "locks").mkdir(parents=True)  # folders alone are no cache
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    env.pop("WORLD_SIZE", None)
    cold = start_event(args, env)
    assert cold["compile"] is True and cold["compile_cache"] == "cold", cold
    assert cold["compile_cache_dirs"] == [str(cache)]  # on a CPU, Inductor's folder only (no Triton)
    (cache / "ab" / "cabc.so").parent.mkdir()
    (cache / "ab" / "cabc.so").write_bytes(b"x")
    assert start_event(args, env)["compile_cache"] == "warm"
    off = start_event([*args, "--no-compile"], env)
    assert off["compile"] is False and off["compile_cache"] is None


def test_the_compile_cache_walk_stops_at_the_first_file_and_finds_the_folders(tmp_path, monkeypatch):
    from payloads import compile_cache

    assert compile_cache.holds_a_file(str(tmp_path / "missing")) is False
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert compile_cache.holds_a_file(str(tmp_path)) is False
    (tmp_path / "a" / "b" / "f").write_text("x")
    assert compile_cache.holds_a_file(str(tmp_path)) is True
    monkeypatch.setattr(compile_cache, "MAX_ENTRIES", 1)
    assert compile_cache.holds_a_file(str(tmp_path)) is None  # too many entries before a file: unknown
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "ind"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "tri"))
    assert compile_cache.state(True, "cuda") == ("cold", [str(tmp_path / "ind"), str(tmp_path / "tri")])
    (tmp_path / "tri").mkdir()
    (tmp_path / "tri" / "k.json").write_text("{}")
    assert compile_cache.state(True, "cuda")[0] == "warm"  # a kernel in Triton's folder counts on a GPU
    assert compile_cache.state(True, "cpu") == ("cold", [str(tmp_path / "ind")])  # a CPU compile reads no Triton
    monkeypatch.setenv("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
    assert compile_cache.state(True, "cuda")[0] == "cold"  # caches there but not read
    assert compile_cache.state(False, "cuda") == (None, [])
