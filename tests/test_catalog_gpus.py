"""GPU spec table and free-notebook reference rows."""

from __future__ import annotations

import pytest

from launcher.catalog import load_catalog
from launcher.catalog.free import FREE_OPTIONS, free_options
from launcher.catalog.gpus import GPUS, PRECISIONS, get_gpu
from launcher.errors import CatalogError


def test_every_snapshot_gpu_has_a_spec(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path))
    # Launchable clouds: every GPU predicted. Reference clouds (estimate only) sell consumer
    # cards without figures here; the estimate lists them unpredicted, with a note.
    cat = load_catalog()
    missing = [g for g in {o.gpu for o in cat.offers if o.provider in ("aws", "gcp")} if g not in GPUS]
    assert not missing
    assert {"RTX4090", "RTX5090", "RTX3090", "RTX-A6000", "GH200"} <= set(GPUS)


def test_specs_are_consistent():
    for spec in GPUS.values():
        assert spec.source.startswith("https://")
        assert set(spec.peak_tflops) == set(PRECISIONS)
        assert spec.memory_gib > 0 and spec.bandwidth_gbs > 0
        for p in PRECISIONS:  # tensor paths never slower than plain fp32
            assert spec.peak(p) >= spec.peak_tflops["fp32"]


def test_dense_peaks_and_fallback():
    assert get_gpu("h100").peak("bf16") == pytest.approx(989.5)  # dense, not the 1979 sparse figure
    assert get_gpu("A100").peak("tf32") == 156.0
    assert get_gpu("V100").peak("bf16") == get_gpu("V100").peak("fp32")  # no bf16 on Volta
    assert get_gpu("A100-80GB").memory_gib == 80 and get_gpu("a100-40gb").memory_gib == 40
    with pytest.raises(CatalogError):
        get_gpu("T4").peak("int8")


def test_unknown_gpu_suggests():
    with pytest.raises(CatalogError) as err:
        get_gpu("H10O")
    assert "did you mean" in str(err.value) and "H100" in str(err.value)


def test_free_options():
    assert {f.name.split()[0] for f in FREE_OPTIONS} == {"Google", "Kaggle"}
    colab = free_options("t4")[0]
    assert colab.max_session_hours == 12 and colab.source_url.startswith("https://")
    assert all(f.gpu in GPUS for f in FREE_OPTIONS)
