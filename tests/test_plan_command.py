"""The dry-run plan shows the command each node runs, in the table and in its JSON."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from launcher.cli import app

SPEC = """name: big
workload: {model: resnet50}
resources: {accelerators: "A100:8", num_nodes: 2, regions: [us-east-1]}
env: {TOKEN: supersecret-1234}
"""


def _dry_run_plan(tmp_path, monkeypatch, text: str, provider: str = "aws", *extra: str) -> dict:
    """`gpujob run SPEC --provider P --dry-run --json`'s plan for a spec of ``text``."""
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    res = CliRunner().invoke(app, ["run", str(spec), "--provider", provider, "--dry-run", "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)["plan"]


def test_dry_run_json_has_one_torchrun_command_per_node(tmp_path, monkeypatch):
    commands = _dry_run_plan(tmp_path, monkeypatch, SPEC)["commands"]
    assert [c["node"] for c in commands] == [0, 1]
    for rank, c in enumerate(commands):
        cmd = c["command"]
        assert "torch.distributed.run" in cmd and "--nnodes 2" in cmd and f"--node_rank {rank}" in cmd
        assert "--nproc_per_node 8" in cmd and "payloads/train.py" in cmd and "timeout" in cmd
        assert "supersecret" not in cmd  # the environment travels in the 0600 file, not the command


def test_dry_run_table_prints_each_nodes_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    spec = tmp_path / "big.yaml"
    spec.write_text(SPEC)
    res = CliRunner().invoke(app, ["run", str(spec), "--provider", "aws", "--dry-run"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert "node 0 runs" in res.output and "node 1 runs" in res.output
    assert "--node_rank 1" in res.output and "supersecret" not in res.output


def test_single_gpu_plan_runs_the_script_directly(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    spec = tmp_path / "one.yaml"
    spec.write_text("name: one\nresources: {accelerators: 'T4:1', regions: [us-east-1]}\n")
    res = CliRunner().invoke(app, ["run", str(spec), "--provider", "aws", "--dry-run", "--json"])
    (c,) = json.loads(res.output)["plan"]["commands"]
    assert c["command"].endswith("python3 -u payloads/train.py --config job.json --output-dir outputs")


SPOT = """name: spotty
workload: {model: tinycnn, image_size: 32, num_classes: 10, in_channels: 1, samples_per_epoch: 256, epochs: 1}
resources: {accelerators: "T4:1", regions: [us-east-1], spot: true, spot_fallback: on-demand}
limits: {max_restarts: 2, max_duration: 15m}
"""


def test_spot_recovery_is_promised_only_where_a_machine_can_be_reclaimed(tmp_path, monkeypatch):
    """`run --provider local --dry-run` of a spot spec said "a reclaimed machine is replaced up to 2
    times (the last on-demand)": this machine is never reclaimed, nothing is replaced."""
    for provider, extra in (("local", ()), ("ssh", ("--host", "127.0.0.1"))):
        line = _dry_run_plan(tmp_path, monkeypatch, SPOT, provider, *extra)["spot recovery"]
        assert "replaced" not in line and "does not apply" in line and provider in line, line
    assert "replaced up to 2 times" in _dry_run_plan(tmp_path, monkeypatch, SPOT, "aws")["spot recovery"]


def test_local_dry_run_says_where_the_cpu_figure_comes_from_and_what_the_run_would_refuse(tmp_path, monkeypatch):
    """The local plan printed `gpu_name null`, `0.0` for the price, "1 samples/s" for 0.9, not
    whether the CPU figure was measured, and nothing about the run refusing it over max_duration."""
    from launcher.estimate import baseline as bl

    text = ("name: slow\nworkload: {model: resnet18, image_size: 64, num_classes: 10, samples_per_epoch: 100000,"
            " batch_size: 32}\nlimits: {max_duration: 10m}\n")
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    (tmp_path / "slow.yaml").write_text(text)
    spec = __import__("launcher.spec", fromlist=["load_spec"]).load_spec(tmp_path / "slow.yaml")
    monkeypatch.setattr(bl, "load_average", lambda: 0.0)  # a quiet machine (see test_estimate_baseline for a busy one)
    probe = json.dumps({"event": "probe", "time": 1.0, "samples_per_second": 0.93, "steps": 3, "seconds": 15.0})
    assert bl.measure_baseline(spec, runner=lambda cmd, timeout: (0, probe, "")).measured  # cached now
    res = CliRunner().invoke(app, ["run", str(tmp_path / "slow.yaml"), "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 7, res.output  # what the launch itself exits with (BudgetError)
    out = res.output
    assert "null" not in out and "gpu_name" not in out and "$0.00/h" in out
    assert "0.93 samples/s (this CPU, measured " in out and ", cached)" in out and "busy" not in out
    assert "refused" in out and "over limits.max_duration (0.2 h)" in out and "--force" in out
    res = CliRunner().invoke(app, ["run", str(tmp_path / "slow.yaml"), "--dry-run", "--force", "--json"])
    assert json.loads(res.output)["refused"] is None  # --force launches anyway: nothing to refuse


def test_a_dry_run_the_launch_would_refuse_exits_like_the_launch_with_one_line(tmp_path, monkeypatch):
    """`run --dry-run` of a spec over its budget printed "refused" in the plan and exited 0, so a
    script checking the plan went on to launch; it exits 7 (BudgetError), as the launch does, with
    the refusal as the one error line on stderr after the plan (stdout keeps the plan's JSON)."""
    text = SPEC.replace("env: {TOKEN: supersecret-1234}\n", "limits: {budget_usd: 1}\n")
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    (tmp_path / "big.yaml").write_text(text)
    args = ["run", str(tmp_path / "big.yaml"), "--provider", "aws", "--dry-run"]
    for extra in ((), ("--json",)):
        res = CliRunner().invoke(app, [*args, *extra], env={"COLUMNS": "400"})
        assert res.exit_code == 7, res.output
        (line,) = res.stderr.splitlines()
        assert line.startswith("error: the launch would be refused: the estimate $") and "exceeds limits.budget_usd $1.00" in line
        assert "(raise the budget, shorten the job, or pass --force)" in line and "Traceback" not in res.output
    assert json.loads(res.stdout)["refused"].startswith("the estimate $")
    res = CliRunner().invoke(app, [*args, "--force", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["refused"] is None, res.output


def test_a_language_models_plan_counts_tokens_per_second(tmp_path, monkeypatch):
    """A language model's plan said "samples/s" for what are tokens/s."""
    text = "name: lm\nworkload: {model: gpt2-124m, seq_len: 256}\nresources: {accelerators: 'H100:1', regions: [us-east-1]}\n"
    res = _dry_run_plan(tmp_path, monkeypatch, text, "aws")
    assert res  # the plan itself
    (tmp_path / "lm.yaml").write_text(text)
    out = CliRunner().invoke(app, ["run", str(tmp_path / "lm.yaml"), "--provider", "aws", "--dry-run"],
                             env={"COLUMNS": "200"}).output
    assert " tokens/s" in out and "samples/s" not in out


def test_an_ssh_plan_without_a_gpu_says_its_figure_is_this_machines_cpu(tmp_path, monkeypatch):
    """`run SPEC --provider ssh --host gpu-box --dry-run` of a spec naming no GPU printed "(this CPU,
    measured ...)" and refused the launch over max_duration from this laptop's CPU speed, with
    nothing saying the host was never asked or how to give its GPU."""
    text = ("name: slow\nworkload: {model: resnet18, image_size: 64, num_classes: 10, samples_per_epoch: 100000,"
            " batch_size: 32}\nlimits: {max_duration: 10m}\n")
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    (tmp_path / "slow.yaml").write_text(text)
    args = ["run", str(tmp_path / "slow.yaml"), "--provider", "ssh", "--host", "gpu-box", "--dry-run"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert res.exit_code == 7, res.output
    assert "this CPU" not in res.output
    assert res.output.count("this machine's CPU in place of the host's, as the spec names no GPU") == 2  # plan, refusal
    assert "name the host's GPU in resources.accelerators" in res.output
    gpu = text.replace("limits:", "resources: {accelerators: 'A100:1'}\nlimits:")
    (tmp_path / "slow.yaml").write_text(gpu)
    res = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert res.exit_code == 0 and "in place of the host's" not in res.output, res.output
