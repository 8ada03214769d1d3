"""The bench's intervals: Wilson's for accuracies, a paired bootstrap for shares."""
import numpy as np
import pytest

from rclib.stats import paired_ratio_interval, wilson_interval


def test_wilson_matches_the_textbook_values_and_stays_in_range():
    low, high = wilson_interval(81, 263)  # Wilson (1927) as tabulated by Newcombe (1998), 95%: 0.2553 - 0.3662
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == 1, "p itself lies inside, exactly"
    assert wilson_interval(0, 10)[1] > 0 and wilson_interval(10, 10)[0] < 1
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)


def test_paired_bootstrap_covers_the_ratio_and_narrows_with_n():
    rng = np.random.default_rng(0)
    reference = (rng.random(4000) < 0.9).astype(float)
    method = reference * (rng.random(4000) < 0.8)  # right on ~80% of the questions the reference gets right
    wide = paired_ratio_interval(method[:200], reference[:200])
    narrow = paired_ratio_interval(method, reference)
    assert narrow[0] < method.mean() / reference.mean() < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert paired_ratio_interval(method[:5], np.zeros(5)) is None
