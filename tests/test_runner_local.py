"""The lifecycle on the local provider: real payload, real files, teardown on every path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from launcher.localhost import group_alive
from tests.runs import SLOW_JOB, sigint_after_first_log
from launcher.errors import BudgetError, Interrupted, JobFailed, UsageError
from launcher.providers.local import LocalProvider
from launcher.runner import RunOptions, Runner
from launcher.spec import parse_spec
from launcher.store import Store

TINY = """
name: tiny
workload: {model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: digits,
           samples_per_epoch: 512, epochs: 1, batch_size: 64, precision: fp32}
limits: {max_duration: 5m}
"""


class RecordingLocal(LocalProvider):
    """The local provider, counting teardowns so tests can assert they happened."""

    teardowns: list[str] = []

    def teardown(self, run_id, resources, ctx):
        RecordingLocal.teardowns.append(run_id)
        return []


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    RecordingLocal.teardowns = []
    events: list[tuple[str, dict]] = []
    r = Runner(store=Store(), on_event=lambda kind, **f: events.append((kind, f)),
               provider_factory=lambda name, **cfg: RecordingLocal())
    r.events = events
    return r


def _opts(**kw):
    return RunOptions(provider="local", baseline=False, **kw)


def test_local_run_trains_and_fetches(runner, tmp_path):
    result = runner.run(parse_spec(TINY), _opts())
    rec = result.run
    assert rec.state == "succeeded" and rec.exit_status == 0
    out = Path(rec.artifacts_dir)
    assert (out / "outputs" / "metrics.json").is_file() and (out / "job.log").is_file()
    assert result.report["actual"]["samples"] >= 512
    assert RecordingLocal.teardowns == [rec.id]
    kinds = [k for k, _ in runner.events]
    assert "progress" in kinds or "payload" in kinds
    assert '"event": "end"' in runner.store.log_text(rec.id) or '"event":"end"' in runner.store.log_text(rec.id)
    if (rec.result or {}).get("start", {}).get("device") == "cpu":  # it teaches this machine's CPU row
        from launcher.estimate.baseline import cached_baseline

        cpu = cached_baseline(parse_spec(TINY))
        assert cpu.basis == f"measured in run {rec.id}, today"
        assert cpu.samples_per_second == rec.result["end"]["samples_per_second"]


def test_artifacts_never_overwrite(runner, tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    rec = runner.run(parse_spec(TINY), _opts(artifacts_dir=str(dest))).run
    assert (dest / "precious.txt").read_text() == "keep me"
    assert Path(rec.artifacts_dir) != dest


def test_failing_job_reports_and_still_fetches(runner, tmp_path):
    (tmp_path / "fail.py").write_text(
        "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/partial.txt','w').write('x')\n"
        "print('about to fail', flush=True)\nraise SystemExit(3)\n")
    spec = parse_spec("name: failing\npayload: {entrypoint: fail.py}\n")
    with pytest.raises(JobFailed) as info:
        runner.run(spec, _opts())
    assert info.value.exit_status == 3
    rec = runner.store.list_runs()[0]
    assert rec.state == "failed" and (Path(rec.artifacts_dir) / "outputs" / "partial.txt").is_file()
    assert "about to fail" in runner.store.log_text(rec.id)
    assert RecordingLocal.teardowns == [rec.id]


def test_budget_refuses_before_creating_anything(runner, monkeypatch):
    import launcher.runner as runner_mod

    monkeypatch.setattr(runner_mod, "job_estimate", lambda *a, **k: {"total_usd": 50.0, "total_seconds": 10})
    spec = parse_spec(TINY.replace("limits: {max_duration: 5m}", "limits: {max_duration: 5m, budget_usd: 5}"))
    with pytest.raises(BudgetError, match="--force"):
        runner.run(spec, _opts())
    assert RecordingLocal.teardowns == []


def test_sigint_during_streaming_tears_down(runner, tmp_path):
    (tmp_path / "slow.py").write_text(SLOW_JOB)
    spec = parse_spec("name: slow\npayload: {entrypoint: slow.py}\n")

    sigint_after_first_log(runner.events)
    with pytest.raises(Interrupted):
        runner.run(spec, _opts())
    rec = runner.store.list_runs()[0]
    assert rec.state == "interrupted" and RecordingLocal.teardowns == [rec.id]
    assert not group_alive(rec.machine["pid"])  # the job was stopped, not left running
    # the interrupt's warning names the signal: the terminal's progress bar ends before it (test_output_shapes)
    assert [f["signal"] for k, f in runner.events if k == "warning" and "received" in f["message"]] == ["SIGINT"]


def test_detach_then_follow(runner, tmp_path):
    rec = runner.run(parse_spec(TINY), _opts(detach=True)).run
    assert rec.state == "running" and RecordingLocal.teardowns == []
    result = runner.attach(rec.id, follow=True)
    assert result.run.state == "succeeded" and RecordingLocal.teardowns == [rec.id]
    log = runner.store.log_text(rec.id)
    assert log.count('"event": "start"') + log.count('"event":"start"') == 1  # every line exactly once


def test_down_stops_a_detached_job(runner, tmp_path):
    (tmp_path / "slow.py").write_text(SLOW_JOB)
    spec = parse_spec("name: slow\npayload: {entrypoint: slow.py}\n")
    rec = runner.run(spec, _opts(detach=True)).run
    runner.down(rec.id)
    got = runner.store.get_run(rec.id)
    assert got.state == "cancelled" and RecordingLocal.teardowns == [rec.id]
    assert got.artifacts_dir and (Path(got.artifacts_dir) / "job.log").is_file()  # brought home first
    ended = got.ended_at
    runner.down(rec.id)  # again, on a finished run: billing times stay as they were
    assert runner.store.get_run(rec.id).ended_at == ended


def test_down_brings_home_the_checkpoint(runner, tmp_path):
    spec = parse_spec(TINY.replace("epochs: 1", "epochs: 400"))
    rec = runner.run(spec, _opts(detach=True)).run
    log = Path(rec.machine["workdir"]) / "job.log"
    deadline = time.time() + 60
    while '"event": "step"' not in (log.read_text() if log.exists() else "") and time.time() < deadline:
        time.sleep(0.2)
    runner.down(rec.id)
    got = runner.store.get_run(rec.id)
    assert (Path(got.artifacts_dir) / "outputs" / "checkpoints" / "last.pt").is_file()


def test_artifacts_path_that_is_a_file_is_refused_before_anything_runs(runner, tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(UsageError, match="is a file"):
        runner.run(parse_spec(TINY), _opts(artifacts_dir=str(tmp_path / "f")))
    assert (tmp_path / "f").read_text() == "mine" and RecordingLocal.teardowns == []


def test_training_longer_than_max_duration_is_refused_with_the_ways_to_proceed(runner):
    """jobs/unet.yaml and jobs/tokenlm.yaml are GPU jobs: on this CPU they are refused, and the
    refusal gives the commands and numbers to go on with: the GPU run, a samples_per_epoch that
    fits max_duration here (at the estimate's own speed), the max_duration the job needs, --force."""
    import math
    import re

    spec = parse_spec("name: big\nworkload: {model: vgg16, samples_per_epoch: 100000, epochs: 2}\n"
                      "limits: {max_duration: 1h}\n")
    with pytest.raises(BudgetError, match="max_duration") as e:
        runner.run(spec, _opts(), spec_path="jobs/big.yaml")  # this CPU: days of VGG16, not an hour
    text = str(e.value)
    assert "on this machine" in text and "`gpujob run jobs/big.yaml --provider auto`" in text
    assert "`gpujob estimate jobs/big.yaml`" in text and "--force" in text
    est = runner.store.list_runs()[0].estimate
    fits = int(re.search(r"samples_per_epoch: ([\d,]+) or fewer", text)[1].replace(",", ""))
    assert 0 < fits * 2 / est["samples_per_second"] <= 3600  # two epochs of it train within the hour
    assert f"max_duration: {math.ceil(est['train_seconds'] * 1.1 / 3600)}h" in text


def test_local_estimate_uses_this_cpu_not_the_specs_gpu(runner):
    spec = parse_spec(TINY + "resources: {accelerators: V100:1}\n")
    rec = runner.run(spec, _opts()).run
    assert rec.estimate["gpu"] is None and rec.estimate["basis"].startswith("cpu")



def test_budget_reached_stops_the_job(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "slow.py").write_text(SLOW_JOB)

    class Pricey(RecordingLocal):
        def launch(self, spec, ctx, deadline_s):
            m = super().launch(spec, ctx, deadline_s)
            m.price_per_hour = 36000.0  # $10 a second: a $5 budget is spent at once
            return m

    runner = Runner(store=Store(), provider_factory=lambda name, **cfg: Pricey())
    spec = parse_spec("name: pricey\npayload: {entrypoint: slow.py}\nlimits: {budget_usd: 5}\n")
    with pytest.raises(JobFailed, match="budget"):
        runner.run(spec, _opts(poll_every_s=0.2))
    rec = runner.store.list_runs()[0]
    assert rec.state == "failed" and "budget" in rec.reason
    assert not group_alive(rec.machine["pid"])


def test_max_duration_is_enforced_on_the_host(runner, tmp_path):
    (tmp_path / "slow.py").write_text(SLOW_JOB)
    spec = parse_spec("name: capped\npayload: {entrypoint: slow.py}\nlimits: {max_duration: 2s}\n")
    with pytest.raises(JobFailed, match="max_duration"):
        runner.run(spec, _opts())
    assert RecordingLocal.teardowns


def test_local_machine_reports_its_gpus_and_spec_count():
    spec = parse_spec("name: g\nresources: {accelerators: H100:2}\n")
    m = LocalProvider(gpus=["NVIDIA H100 80GB HBM3"] * 8).launch(spec, None, 1)
    assert m.gpu == "H100" and m.gpu_count == 2
    assert LocalProvider(gpus=["NVIDIA H100 80GB HBM3"]).launch(spec, None, 1).gpu_count == 1  # capped
    cpu = LocalProvider(gpus=[]).launch(spec, None, 1)
    assert cpu.gpu is None and cpu.gpu_count == 0


def test_report_compares_training_time_with_the_predicted_compile_warmup():
    # The payload's elapsed time includes torch.compile; the estimate's training time does not,
    # so the report adds the warm-up it predicted (the H100 runs were +102% / +448% off otherwise).
    from launcher.report import build_report
    from launcher.store import RunRecord

    rec = RunRecord(id="r1", name="n", provider="local", state="succeeded", created_at=0.0, updated_at=0.0,
                    estimate={"train_seconds": 22.0, "warmup_seconds": 26.0, "total_seconds": 66.0,
                              "samples_per_second": 4600.0, "total_usd": 0.0},
                    launched_at=100.0, ended_at=167.0, job_started_at=100.5, job_ended_at=166.5,
                    result={"start": {"device": "cuda"}, "end": {"elapsed": 44.9, "samples_per_second": 5270.4}})
    rep = build_report(rec)
    assert rep["estimate"]["train_seconds"] == 48.0
    assert round(rep["delta_pct"]["train_seconds"], 1) == round(100 * (44.9 - 48.0) / 48.0, 1)
    assert round(rep["delta_pct"]["total_seconds"], 1) == round(100 * (67.0 - 66.0) / 66.0, 1)


def test_two_ctrl_cs_during_a_fetch_that_completes_do_not_say_the_results_were_skipped(runner, tmp_path,
                                                                                        monkeypatch):
    """Two Ctrl-Cs while a local run's 2.4 GB of results were copied home: the copy finished
    ("artifacts: 6 file(s) in ..."), then the run said "warning: results not fetched (skipped by a
    second signal)" although every file was home."""
    import os
    import signal

    import launcher.artifacts as artifacts

    real = artifacts.fetch

    def fetch(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # both land while the copy runs
        return real(*a, **kw)

    monkeypatch.setattr(artifacts, "fetch", fetch)
    (tmp_path / "job.py").write_text("import os\nos.makedirs('outputs', exist_ok=True)\n"
                                     "open('outputs/result.txt', 'w').write('kept')\n")
    with pytest.raises(Interrupted):
        runner.run(parse_spec("name: done\npayload: {entrypoint: job.py}\n"), _opts())
    (rec,) = runner.store.list_runs()
    messages = [f.get("message", "") for k, f in runner.events if k == "warning"]
    assert not any("not fetched" in m for m in messages), messages
    assert (Path(rec.artifacts_dir) / "outputs" / "result.txt").read_text() == "kept"
    assert rec.state == "interrupted" and RecordingLocal.teardowns == [rec.id]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_ctrl_c_during_setup_interrupts_the_run_and_kills_the_setup(tmp_path):
    """Ctrl-C at the terminal while a local run's `setup:` ran killed the setup (it was in the
    terminal's process group) and the run ended "failed (remote command exited -2: cd ... && ...)",
    exit 5 (an SSH error). The setup now runs in a session of its own: the CLI is interrupted
    (exit 130, state interrupted), kills the setup's process group and releases everything."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "job.py").write_text("print('ran')\n")
    (tmp_path / "s.yaml").write_text("name: setup-then-job\npayload: {entrypoint: job.py}\n"
                                    "setup: 'echo setting up; sleep 97; echo done'\nlimits: {max_duration: 5m}\n")
    env = {**os.environ, "GPUJOB_HOME": str(tmp_path / "home"), "PYTHONPATH": str(root)}
    out = tmp_path / "cli.out"

    def sleeper() -> list[int]:
        return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == b"sleep\x0097\x00"]

    with open(out, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "run", "s.yaml", "--no-baseline"], cwd=tmp_path,
                                env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True,  # its own group, as a terminal's foreground job
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not sleeper():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the foreground group
        assert proc.wait(60) == 130, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    assert "interrupted (SIGINT)" in text and "exited -2" not in text, text
    assert not sleeper()  # the setup's own children are gone too
    (rec,) = Store(tmp_path / "home" / "runs.db").list_runs()
    assert rec.state == "interrupted"


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_custom_payload_run_on_this_cpu_is_not_compared_with_this_cpu():
    """A local run of a custom payload (no `start` event naming the device) on a machine without a
    GPU reported "vs this machine's CPU: 0s on CPU, speedup 0.0x, loses 12s": the CPU against itself."""
    from launcher.report import build_report
    from launcher.store import RunRecord

    def report(provider, gpu_count, start):
        return build_report(RunRecord(
            id="r1", name="n", provider=provider, state="succeeded", created_at=0.0, updated_at=0.0,
            estimate={"train_seconds": 0.03, "total_seconds": 4.0, "baseline": {"seconds": 0.03}},
            machine={"gpu_count": gpu_count}, launched_at=100.0, ended_at=112.0, job_started_at=100.5,
            job_ended_at=106.5, result={"start": start, "end": {}}))

    assert "vs_cpu" not in report("local", 0, {})
    assert "vs_cpu" in report("local", 1, {}) and "vs_cpu" in report("ssh", None, {})  # a GPU, or another machine
    assert "vs_cpu" in report("local", 1, {"device": "cuda"}) and "vs_cpu" not in report("ssh", 1, {"device": "cpu"})


def test_large_upload_is_announced_before_it_is_sent(runner, tmp_path, monkeypatch):
    import launcher.uploads as uploads

    monkeypatch.setattr(uploads, "LARGE_UPLOAD_BYTES", 10_000)  # the real threshold is 100 MB
    tmp_path = tmp_path / "project"  # the run database lives beside it, not inside
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text("print('ok')\n")
    (tmp_path / "dataset.npz").write_bytes(b"x" * 20_000)
    (tmp_path / ".gpujobignore").write_text("skip/\n")
    (tmp_path / "skip").mkdir()
    (tmp_path / "skip" / "huge.bin").write_bytes(b"y" * 50_000)
    runner.run(parse_spec("name: big\npayload: {entrypoint: job.py}\n"), _opts())
    kinds = [k for k, _ in runner.events]
    notice = dict(runner.events)["upload"]
    assert kinds.index("upload") < kinds.index("setup") if "setup" in kinds else True
    assert 20_000 <= notice["bytes"] < 21_000 and "dataset.npz" in notice["message"] and "huge.bin" not in notice["message"]
    assert ".gpujobignore" in notice["message"]
    assert "payload.entrypoint job.py is your own code" in notice["message"]
    (tmp_path / "dataset.npz").unlink()
    runner.events.clear()
    runner.run(parse_spec("name: small\npayload: {entrypoint: job.py}\n"), _opts())
    assert "upload" not in [k for k, _ in runner.events]


def test_a_dataset_in_the_project_reaches_the_built_in_payload(runner, tmp_path, monkeypatch):
    """`dataset: data/d.npz` beside the spec, with a built-in model: the estimate sized it here,
    but only payloads/ was uploaded and the job failed with exit 2 ("data/d.npz: no such file or
    directory"). The project directory now goes with the payload when the dataset is in it."""
    import numpy as np

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    monkeypatch.chdir(project)
    rng = np.random.default_rng(0)
    np.savez(project / "data" / "d.npz", x=rng.random((96, 1, 8, 8), np.float32), y=rng.integers(0, 10, 96))
    spec = parse_spec("""
name: npz
workload: {model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: data/d.npz,
           epochs: 1, batch_size: 32, precision: fp32}
limits: {max_duration: 5m}
""")
    assert spec.workload.samples_per_epoch == 96  # sized from the file here
    rec = runner.run(spec, _opts()).run
    assert rec.state == "succeeded" and rec.exit_status == 0, runner.store.log_text(rec.id)


@pytest.fixture
def bucket(request, monkeypatch):
    """A bucket named ckpt behind a loopback endpoint: moto's S3 server or tests/fake_gcs.py.
    Yields (store URL, a function listing what the endpoint saw: objects for S3, requests for GCS)."""
    for var in [k for k in __import__("os").environ if k.startswith("AWS_")] + ["STORAGE_EMULATOR_HOST"]:
        monkeypatch.delenv(var, raising=False)
    if request.param == "s3":
        import boto3
        from moto.server import ThreadedMotoServer

        from tests.sshd import free_port

        port = free_port()
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent/gpujob-test-aws-config",
               "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/gpujob-test-aws-credentials"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="ckpt")
        try:
            yield "s3://ckpt/runs", lambda: s3.list_objects_v2(Bucket="ckpt").get("Contents", [])
        finally:
            server.stop()
        return
    from tests.fake_gcs import FakeGcs

    fake = FakeGcs().start()
    fake.create_bucket("ckpt")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.url)
    try:
        yield "gs://ckpt/runs", lambda: list(fake.requests)
    finally:
        fake.stop()


@pytest.mark.parametrize("bucket", ["s3", "gs"], indirect=True)
def test_a_local_run_leaves_the_checkpoint_store_alone(runner, bucket):
    """`run --provider local` with a cloud spec's checkpoint_store reached the bucket from the
    laptop (the user's own credentials, their upload bandwidth). The store exists for machines that
    can vanish; here the checkpoint is already on this disk: one line says so, the bucket is not touched."""
    url, seen = bucket
    spec = parse_spec(TINY + f"checkpoint_store: {url}\n")
    plan = runner.plan(spec, _opts())["plan"]
    assert plan["checkpoint store"].startswith(f"{url}: not used (nothing reclaims this machine")
    rec = runner.run(spec, _opts()).run
    assert rec.state == "succeeded", rec.reason
    warnings = [f["message"] for k, f in runner.events if k == "warning"]
    assert any(m.startswith(f"checkpoint_store {url} is not used (nothing reclaims") for m in warnings), warnings
    assert (Path(rec.artifacts_dir) / "outputs" / "checkpoints" / "last.pt").is_file()  # the checkpoint is here
    assert seen() == []  # nothing listed, uploaded or even asked of the bucket
    assert "checkpoint_sync" not in runner.store.log_text(rec.id)
