import math

import pytest

from rclib.shapes.metrics import family_metrics
from rclib.shapes.world import sample_vqa


def by_family(n=50):
    samples = sample_vqa(0, n)
    return samples, {f: [s for s in samples if s.family == f] for f in {s.family for s in samples}}


def test_all_correct_and_all_wrong():
    samples, _ = by_family()
    right = family_metrics(samples, [s.answer for s in samples])
    assert right["accuracy"] == 1.0 and all(right[f"accuracy_{s.family}"] == 1.0 for s in samples)
    assert right["existence_f1"] == 1.0
    wrong = family_metrics(samples, ["zebra"] * len(samples))
    assert wrong["accuracy"] == 0.0 and wrong["existence_yes_ratio"] == 0.0
    assert "existence_f1" not in wrong or wrong["existence_f1"] == 0.0


def test_exact_existence_f1_and_yes_ratio():
    samples = sample_vqa(0, 8, families=("existence",))
    truth = [s.answer for s in samples]
    said = ["yes"] * len(samples)  # always yes: recall 1, precision = share of true yes
    m = family_metrics(samples, said)
    positives = truth.count("yes")
    assert m["existence_yes_ratio"] == 1.0
    assert m["accuracy_existence"] == positives / len(samples)
    assert m["existence_f1"] == pytest.approx(2 * positives / (len(samples) + positives))
    assert set(m) == {"accuracy", "accuracy_existence", "existence_yes_ratio", "existence_f1"}


def test_f1_left_out_when_undefined():
    samples = [s for s in sample_vqa(0, 20, families=("existence",)) if s.answer == "no"][:3]
    m = family_metrics(samples, ["no"] * 3)
    assert "existence_f1" not in m and m["accuracy"] == 1.0
    assert all(not math.isnan(v) for v in m.values())


def test_choice_is_scored_by_letter_and_families_only_when_present():
    samples = sample_vqa(0, 10, families=("choice",))
    m = family_metrics(samples, [f"({s.answer.upper()})" for s in samples[:5]] + ["e"] * 5)
    assert m == {"accuracy": 0.5, "accuracy_choice": 0.5}


def test_length_mismatch_and_empty_raise():
    samples = sample_vqa(0, 2)
    with pytest.raises(ValueError, match="one answer per sample"):
        family_metrics(samples, ["yes"])
    with pytest.raises(ValueError, match="no samples"):
        family_metrics([], [])
