"""The host-speed score of bench/hostspeed.py (what bench/host_compile.py records beside each cold
compile): its arithmetic with an injected clock, and a workload that does the same work every time.
No timing is asserted."""

import pytest

from bench import hostspeed


def test_measure_counts_passes_per_second_of_the_best_repeat():
    ticks = iter([0.0, 0.5, 10.0, 10.25, 20.0, 21.0])  # repeats of 0.5, 0.25 and 1.0 s
    got = hostspeed.measure(passes=1, repeats=3, clock=lambda: next(ticks))
    assert got["score"] == pytest.approx(4.0) and got["repeat_s"] == [0.5, 0.25, 1.0]


def test_a_clock_that_does_not_move_gives_no_score():
    assert hostspeed.measure(passes=1, repeats=2, clock=lambda: 5.0)["score"] is None


def test_one_pass_is_the_same_work_each_time_and_grows_with_the_graph():
    assert hostspeed._one_pass(50) == hostspeed._one_pass(50) > 0
    assert hostspeed._one_pass(400) > hostspeed._one_pass(50)
