"""The host-speed score's cache (launcher/estimate/hostspeed.py): keyed by CPU model, cores and
Python, measured once per host, injectable; no timing is asserted."""

import json

import pytest

from launcher.estimate import hostspeed


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))


class Measurer:
    def __init__(self, *scores):
        self.scores, self.calls = list(scores), 0

    def __call__(self):
        self.calls += 1
        return {"score": self.scores.pop(0), "repeat_s": [0.01]}


def test_key_changes_with_cpu_cores_and_python_only():
    k = hostspeed.host_key("Intel(R) Xeon(R) Processor", 16, "CPython3.12.3")
    assert k == hostspeed.host_key("Intel(R) Xeon(R) Processor", 16, "CPython3.12.3")
    assert len({k, hostspeed.host_key("AMD EPYC", 16, "CPython3.12.3"),
                hostspeed.host_key("Intel(R) Xeon(R) Processor", 2, "CPython3.12.3"),
                hostspeed.host_key("Intel(R) Xeon(R) Processor", 16, "CPython3.11.7")}) == 4


def test_measured_once_then_read_from_the_cache(tmp_path):
    path, m = tmp_path / "hostspeed.json", Measurer(900.0, 1200.0)
    first = hostspeed.host_score(path, key="h1", measurer=m, now=lambda: 1000.0)
    again = hostspeed.host_score(path, key="h1", measurer=m, now=lambda: 2000.0)
    assert (first["score"], first["cached"]) == (900.0, False)
    assert (again["score"], again["cached"], m.calls) == (900.0, True, 1)
    assert json.loads(path.read_text())["h1"]["score"] == 900.0


def test_another_host_key_is_measured_apart(tmp_path):
    path, m = tmp_path / "hostspeed.json", Measurer(900.0, 1200.0)
    hostspeed.host_score(path, key="h1", measurer=m, now=lambda: 0.0)
    other = hostspeed.host_score(path, key="h2", measurer=m, now=lambda: 0.0)
    assert other["score"] == 1200.0 and m.calls == 2
    assert set(json.loads(path.read_text())) == {"h1", "h2"}


def test_old_or_refreshed_entries_are_measured_again(tmp_path):
    path, m = tmp_path / "hostspeed.json", Measurer(900.0, 1000.0, 1100.0)
    hostspeed.host_score(path, key="h1", measurer=m, now=lambda: 0.0)
    aged = hostspeed.host_score(path, key="h1", measurer=m, now=lambda: hostspeed.CACHE_MAX_AGE_S + 1.0)
    forced = hostspeed.host_score(path, key="h1", measurer=m, now=lambda: hostspeed.CACHE_MAX_AGE_S + 2.0,
                                  refresh=True)
    assert (aged["score"], aged["cached"], forced["score"], m.calls) == (1000.0, False, 1100.0, 3)


def test_a_failed_measurement_is_not_cached_and_a_corrupt_cache_is_no_cache(tmp_path):
    path = tmp_path / "hostspeed.json"
    path.write_text("{not json")
    got = hostspeed.host_score(path, key="h1", measurer=lambda: {"score": None}, now=lambda: 0.0)
    assert got["score"] is None and got["cached"] is False and path.read_text() == "{not json"
    m = Measurer(800.0)
    assert hostspeed.host_score(path, key="h1", measurer=m, now=lambda: 0.0)["score"] == 800.0


def test_measure_counts_passes_per_second_of_the_best_repeat():
    ticks = iter([0.0, 0.5, 10.0, 10.25, 20.0, 21.0])  # repeats of 0.5, 0.25 and 1.0 s
    got = hostspeed.measure(passes=1, repeats=3, clock=lambda: next(ticks))
    assert got["score"] == pytest.approx(4.0) and got["repeat_s"] == [0.5, 0.25, 1.0]


def test_one_pass_is_deterministic_work():
    assert hostspeed._one_pass(50) == hostspeed._one_pass(50) > 0


@pytest.mark.parametrize("reference, score, factor", [(1000.0, 1250.0, 0.8), (1000.0, 500.0, 2.0),
                                                      (None, 900.0, 1.0), (1000.0, None, 1.0), (1000.0, 0.0, 1.0)])
def test_scale_is_reference_over_score(reference, score, factor):
    assert hostspeed.scale(reference, score) == pytest.approx(factor)
