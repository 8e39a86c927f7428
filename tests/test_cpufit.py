"""The no-probe CPU baseline, priced per operation class (launcher/estimate/cpufit.py)."""

from __future__ import annotations

import json

import pytest

from launcher.estimate import cpufit
from launcher.estimate.flops import model_cost, workload_cost
from launcher.estimate.paths import calibration_dir, results_dir
from launcher.estimate.throughput import predict_cpu
from launcher.spec import Workload


def _cls(flops_ps=0.0, bytes_ps=0.0, bytes_fixed=0.0, kernels=1.0) -> dict:
    return {"flops_per_sample": flops_ps, "flops_fixed": 0.0, "bytes_per_sample": bytes_ps, "bytes_fixed": bytes_fixed,
            "bytes_fused_per_sample": bytes_ps, "bytes_fused_fixed": bytes_fixed, "kernels": kernels,
            "kernels_fused": kernels}


# One step: 10 convolutions (1 GFLOP and 10 MB per sample, 1 MB of weights), two of them depthwise
# (gemm_ops rows: 0.1 GFLOP and 2 MB per sample each), 4 norms (20 MB per sample), one optimizer
# update (400 MB of weights, momenta and gradients).
OPS = {"classes": {"conv": _cls(1e9, 1e7, 1e6, 10), "norm": {**_cls(0.0, 2e7, 0.0, 4), "flops_per_sample": 1e6},
                   "optimizer": _cls(0.0, 0.0, 4e8, 1)},
       "gemm_ops": [["conv_depthwise", 1e8, 0.0, 2e6, 0.0, 32, 9, 2, [], 0],
                    ["conv_kxk", 4e8, 0.0, 3e6, 5e5, 64, 576, 2, [], 1]]}
FIT = {"classes": {"conv": {"s_per_flop": 1e-11, "s_per_byte": 0.0},  # 100 GFLOP/s per core
                   "conv_depthwise": {"s_per_flop": 1e-10, "s_per_byte": 0.0},  # 10 GFLOP/s per core
                   "norm": {"s_per_flop": 0.0, "s_per_byte": 1e-9},  # 1 GB/s per core
                   "optimizer": {"s_per_flop": 0.0, "s_per_byte": 5e-10}},  # 2 GB/s per core
       "s_per_op": 1e-4}


def test_step_counts_split_depthwise_convolutions_from_the_dense_rest():
    c = cpufit.step_counts(OPS, 4)
    # depthwise: 2 ops x 4 samples x 0.1 GFLOP = 0.8 GFLOP, 2 x 4 x 2 MB = 16 MB
    assert c["conv_depthwise"] == pytest.approx({"flops": 8e8, "bytes": 1.6e7, "kernels": 2})
    # dense: 4 GFLOP - 0.8; 1 MB + 4 x 10 MB - 16 MB; 10 - 2 operations
    assert c["conv"] == pytest.approx({"flops": 3.2e9, "bytes": 2.5e7, "kernels": 8})
    assert c["norm"] == pytest.approx({"flops": 4e6, "bytes": 8e7, "kernels": 4})
    assert c["optimizer"] == pytest.approx({"flops": 0.0, "bytes": 4e8, "kernels": 1})


def test_step_time_is_each_class_at_its_rate_plus_the_per_operation_cost():
    secs, per = cpufit.step_seconds(FIT, cpufit.step_counts(OPS, 4), cores=2)
    assert per["conv"] == pytest.approx(3.2e9 * 1e-11 / 2)  # 0.016 s
    assert per["conv_depthwise"] == pytest.approx(8e8 * 1e-10 / 2)  # 0.04 s
    assert per["norm"] == pytest.approx(8e7 * 1e-9 / 2)  # 0.04 s: bytes-bound, its FLOPs not priced
    assert per["optimizer"] == pytest.approx(4e8 * 5e-10 / 2)  # 0.1 s
    assert per["overhead"] == pytest.approx(15 * 1e-4)  # 15 operations, not divided by the cores
    assert secs == pytest.approx(0.1975)
    assert cpufit.predict(OPS, 4, 2, {"fit": FIT}) == pytest.approx(4 / 0.1975)  # 20.25 samples/s


def test_a_class_the_fit_never_saw_is_priced_as_a_roofline():
    fitted = {"classes": {"conv": {"s_per_flop": 2e-11, "s_per_byte": 0.0},  # 50 GFLOP/s per core
                          "norm": {"s_per_flop": 0.0, "s_per_byte": 1e-9},
                          "elementwise": {"s_per_flop": 0.0, "s_per_byte": 3e-9},
                          "reduction": {"s_per_flop": 0.0, "s_per_byte": 2e-9}}, "s_per_op": 0.0}
    counts = {"attention": {"flops": 1e9, "bytes": 1e6, "kernels": 1},  # 57 FLOPs per byte
              "conv_depthwise": {"flops": 2e7, "bytes": 1e7, "kernels": 1},  # 2 FLOPs per byte
              "data_movement": {"flops": 0.0, "bytes": 1e6, "kernels": 1}}
    _, per = cpufit.step_seconds(fitted, counts, 2)
    # compute: max(FLOPs at the dense convolutions' rate, bytes at the median bytes rate, 2e-9 s/B)
    assert per["attention"] == pytest.approx(max(1e9 * 2e-11, 1e6 * 2e-9) / 2)  # 0.01 s: FLOP-bound
    assert per["conv_depthwise"] == pytest.approx(max(2e7 * 2e-11, 1e7 * 2e-9) / 2)  # 0.01 s: memory-bound
    assert per["data_movement"] == pytest.approx(1e6 * 2e-9 / 2)


def _row(model: str, threads: int, batch: int, counts: dict, fitted: dict, other_s: float = 0.0) -> dict:
    """A measured row whose profile is exactly ``fitted``'s prediction (threads x faster per class)."""
    _, per = cpufit.step_seconds({**fitted, "s_per_op": 0.0}, counts, threads)
    self_us = {c: t * 1e6 for c, t in per.items() if c != "overhead"}
    self_us["other"] = other_s * 1e6
    step = sum(self_us.values()) / 1e6
    return {"model": model, "threads": threads, "batch_size": batch, "image_size": 32, "load": 0.0,
            "step_s": step, "samples_per_second": batch / step, "train_flops_per_sample": 1e9,
            "profile": {"self_us": self_us}, "classes": counts}


def test_the_fit_recovers_known_rates_and_predicts_a_left_out_model():
    truth = {"classes": {"conv": {"s_per_flop": 1e-11, "s_per_byte": 2e-10},
                         "norm": {"s_per_flop": 0.0, "s_per_byte": 1e-9}}, "s_per_op": 0.0}
    rows = []
    for i, (f, b) in enumerate(((1e10, 1e8), (2e10, 1e9), (5e9, 2e9))):
        counts = {"conv": {"flops": f, "bytes": b, "kernels": 10}, "norm": {"flops": 0.0, "bytes": b, "kernels": 10}}
        for threads in (1, 2):
            rows.append(_row(f"m{i}", threads, 8, counts, truth, other_s=0.02))
    fitted = cpufit.fit(rows)
    for c in ("conv", "norm"):
        assert fitted["classes"][c] == pytest.approx(truth["classes"][c], rel=1e-6)
    assert fitted["s_per_op"] == pytest.approx(0.02 / 20)  # 20 ms of "other" over 20 operations
    ev = cpufit.evaluate(rows)
    assert ev["leave_one_model_out"]["max"] < 1e-6 and ev["leave_one_model_out"]["n"] == 6


def test_cpu_prediction_is_per_class_when_the_model_has_counts():
    w = Workload(model="resnet50", image_size=224, batch_size=16)
    cost = workload_cost(w, allow_torch=False)
    per_class = predict_cpu(cost, 2, batch=16)
    doc = cpufit.fitted_rates()
    assert per_class == pytest.approx(cpufit.predict(cost.ops, 16, 2, doc))
    flat = predict_cpu(model_cost("resnet50", 224, 1000), 2)  # no counts: cores x one per-core rate
    assert flat == pytest.approx(2 * doc["flat_gflops_per_core"] * 1e9 / cost.train_flops_per_sample)


def test_the_bundled_rates_are_the_fit_of_the_measured_rows():
    raw = json.loads((results_dir() / cpufit.RAW_FILE).read_text())
    bundled = json.loads((calibration_dir() / cpufit.RATES_FILE).read_text())
    assert bundled == json.loads(json.dumps(cpufit.build_doc(raw), sort_keys=True)), \
        "stale: python -m launcher.estimate.cpufit --write && python3 bench/package_calibration.py"


def test_the_cpu_band_is_this_cpus_held_out_error_and_wider_elsewhere(monkeypatch):
    from launcher.estimate import bands

    doc = {"host": {"cpu": "AMD EPYC"}, "fit": FIT,
           "error": {"leave_one_model_out": {"median": 0.15, "max": 0.83, "max_ratio": 2.21, "n": 13}}}
    monkeypatch.setattr(cpufit, "fitted_rates", lambda: doc)
    same, basis = bands.cpu_band("AMD EPYC")
    assert same == pytest.approx(0.15) and "fitted on this CPU model (AMD EPYC)" in basis
    other, basis = bands.cpu_band("Intel(R) Core(TM) i7-8700")
    assert other == pytest.approx(1.21) and "never measured" in basis  # the worst held-out ratio, 2.21x
    monkeypatch.setattr(cpufit, "fitted_rates", lambda: {})
    assert bands.cpu_band("AMD EPYC") == (None, "")
