"""Scoring of ShapesWorld answers: the one owner of accuracy per family (bench and lmms-eval call it)."""

from __future__ import annotations

from rclib.shapes.world import FAMILIES, VQASample, normalize_answer, score_answer


def scored(samples: list[VQASample], answers: list[str]) -> list[bool]:
    """Whether each answer is right, by the world's rule (`score_answer`)."""
    if len(samples) != len(answers):
        raise ValueError(f"got {len(answers)} answers for {len(samples)} samples; pass one answer per sample")
    if not samples:
        raise ValueError("no samples to score; pass at least one")
    return [score_answer(s, a) for s, a in zip(samples, answers)]


def family_metrics(samples: list[VQASample], answers: list[str]) -> dict[str, float]:
    """`accuracy` over all samples, `accuracy_<family>` per family present and, when existence questions
    are present, `existence_f1` (yes = positive) and `existence_yes_ratio`. JSON-safe: a key whose value
    would be undefined (F1 without any yes, predicted or true) is left out."""
    correct = scored(samples, answers)
    metrics = {"accuracy": sum(correct) / len(correct)}
    for family in FAMILIES:
        picked = [c for s, c in zip(samples, correct) if s.family == family]
        if picked:
            metrics[f"accuracy_{family}"] = sum(picked) / len(picked)
    existence = [(s.answer == "yes", normalize_answer(a) == "yes") for s, a in zip(samples, answers)
                 if s.family == "existence"]
    if existence:
        true_pos = sum(truth and said for truth, said in existence)
        said_yes = sum(said for _, said in existence)
        truly_yes = sum(truth for truth, _ in existence)
        metrics["existence_yes_ratio"] = said_yes / len(existence)
        if said_yes + truly_yes:
            metrics["existence_f1"] = 2 * true_pos / (said_yes + truly_yes)
    return metrics
