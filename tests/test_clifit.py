"""The overhead of `gpujob run --provider local` fitted on CLI runs (launcher/estimate/clifit.py)."""

import pytest

from launcher.estimate import clifit


def run(model, outside, compile_s, gb=0.0, ops=100.0, source="a.json", steady=20.0):
    return {"model": model, "batch_size": 32, "source": source, "total_s": steady + outside + compile_s,
            "steady_s": steady, "outside_s": outside, "compile_s": compile_s, "graph_ops": ops, "checkpoint_gb": gb}


def test_runs_of_splits_a_cli_run_into_outside_and_compile():
    doc = {"results": [
        {"model": "resnet18", "cache": "cold", "rc": 0, "samples": 2560, "image_size": 224, "num_classes": 1000,
         "batch_size": 256, "precision": "bf16",
         "report": {"actual": {"total_seconds": 60.0, "samples": 2560, "samples_per_second": 256.0}},
         "end": {"elapsed": 45.0}},
        {"model": "resnet18", "cache": "warm", "rc": 0, "report": {"actual": {"total_seconds": 40.0}}},
        {"model": "mlp", "cache": "cold", "rc": 1}]}
    (r,) = clifit.runs_of(doc, "x.json")
    assert r["outside_s"] == pytest.approx(15.0) and r["compile_s"] == pytest.approx(35.0)  # 45 - 2560 / 256
    assert r["checkpoint_gb"] == pytest.approx(11689512 * 12 / 1e9, rel=0.01) and r["graph_ops"] > 0


def test_fit_takes_each_models_median_and_a_line_for_the_rest():
    runs = [run("a", 10, 20, gb=0.0, ops=100), run("a", 12, 30, gb=0.0, ops=100), run("a", 11, 25, gb=0.0, ops=100),
            run("b", 20, 40, gb=2.0, ops=300, source="b.json")]
    fit = clifit.fit(runs, {"a": 20.0, "c": 10.0})
    assert fit["outside"]["s_per_gb"] == pytest.approx(4.5) and fit["outside"]["a"] == pytest.approx(11.0)
    assert fit["compile_s"] == {"a": 25.0, "b": 40.0} and fit["probe_ratio"] == pytest.approx(1.25)
    assert fit["line"]["b"] == pytest.approx(15 / 200)
    assert clifit.compile_s(fit, "a", 100, {"a": 20.0}) == 25.0          # measured through the CLI
    assert clifit.compile_s(fit, "c", 999, {"c": 10.0}) == pytest.approx(12.5)  # probed only: x ratio
    assert clifit.compile_s(fit, "d", 500, {}) == pytest.approx(40 + 200 * 15 / 200)  # never measured
    assert clifit.compile_s(fit, "lm", None, {}) is None
    assert fit["spread"]["n_models"] == 1 and fit["spread"]["max"] == pytest.approx(6 / 36, abs=1e-4)  # a: 30, 36, 42


def test_held_out_never_sees_the_run_or_its_call():
    runs = [run("a", 10, 20), run("a", 10, 40, source="b.json"), run("a", 10, 30, source="b.json")]
    by_run = clifit.held_out(runs, [20.0] * 3, None, "run")
    by_call = clifit.held_out(runs, [20.0] * 3, None, "call")
    assert by_run[0]["predicted_overhead_s"] == pytest.approx(10 + 35)  # median of 40 and 30
    assert by_call[1]["predicted_overhead_s"] == pytest.approx(10 + 20)  # only a.json left
    assert by_call[0]["total_error"] == pytest.approx((20 + 10 + 35) / 50 - 1, abs=1e-4)


def test_host_error_is_the_fits_overhead_error_on_unseen_hosts():
    fit = clifit.fit([run("a", 10, 30), run("b", 10, 10)])  # outside 10 s; compile a 30 s, b 10 s
    fast = [run("a", 8, 24, source="fast.json"), run("b", 8, 8, source="fast.json")]  # overheads 32, 16
    slow = [run("a", 12, 38, source="slow.json"), run("c", 5, 5, ops=None, source="slow.json")]  # c: no compile
    got = clifit.host_error(fit, fast + slow)
    assert got["n_runs"] == 3 and got["by_call"] == {"fast.json": pytest.approx(0.25), "slow.json": pytest.approx(-0.2)}
    assert got["median"] == pytest.approx(0.25) and got["max"] == pytest.approx(0.25)
    assert clifit.host_error(fit, []) is None


def ab_row(model, condition, total, loop, samples=2560, rate=256.0):
    """A bench/bytecode_ab.py row: outside = total - loop, compile = loop - samples / rate."""
    shape = {"image_size": 28, "num_classes": 10, "in_channels": 1} if model == "mlp" else \
        {"image_size": 224, "num_classes": 1000}
    return {"model": model, "condition": condition, "cache": "cold", "rc": 0, "samples": samples, **shape,
            "batch_size": 256, "precision": "bf16",
            "report": {"actual": {"total_seconds": total, "samples": samples, "samples_per_second": rate}},
            "end": {"elapsed": loop}}


def test_bytecode_cost_is_the_median_paired_difference_per_model():
    # steady 10 s each; mlp pairs: outside 16-6=10 and 18-6=12, compile 6-4=2 and 5-4=1; vgg16: outside 7, compile 0
    doc = {"results": [ab_row("mlp", "nopyc", 32, 16), ab_row("mlp", "pyc", 20, 14),
                       ab_row("vgg16", "pyc", 40, 30), ab_row("vgg16", "nopyc", 47, 30),
                       ab_row("mlp", "pyc", 20, 14), ab_row("mlp", "nopyc", 33, 15),
                       ab_row("mlp", "nopyc", 30, 20)]}  # a third mlp nopyc run has no pyc partner
    got = clifit.bytecode_cost(doc)
    assert got == {"outside_s": pytest.approx(10.0), "compile_s": pytest.approx(1.0), "n_pairs": 3,
                   "models": ["mlp", "vgg16"]}
    assert clifit.bytecode_cost({"results": [ab_row("mlp", "nopyc", 32, 16)]}) is None


def test_a_user_machine_is_priced_without_the_lent_machines_source_compile():
    cli = {"outside": {"a": 15.0, "s_per_gb": 2.5}, "compile_s": {"mlp": 4.0, "vgg16": 26.0},
           "bytecode": {"outside_s": 8.7, "compile_s": 1.4}}
    assert clifit.outside_s(cli, 2e9) == pytest.approx(20.0)  # the lent machines' figure, what the fit checks
    assert clifit.user_outside_s(cli, 2e9) == pytest.approx(20.0 - 8.7)
    assert clifit.user_compile_s(cli, "vgg16", None) == pytest.approx(26.0 - 1.4)
    assert clifit.user_compile_s(cli, "other", None) is None
    assert clifit.user_compile_s({**cli, "compile_s": {"tiny": 1.0}}, "tiny", None) == 0.0  # never negative
    no_ab = {k: v for k, v in cli.items() if k != "bytecode"}
    assert clifit.user_outside_s(no_ab, 2e9) == pytest.approx(20.0)
