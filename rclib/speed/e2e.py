"""The end-to-end rows of ``rclib speed``: every method at B = 1 against its bound, the released code's way of
doing RC's work against rclib's, and images per second at each batch size."""
from __future__ import annotations

import statistics

from rclib.methods import METHODS
from rclib.methods.released_reference import released_compress
from rclib.models.compressed import CompressedModel
from rclib.speed.config import QUESTION, SpeedConfig
from rclib.speed.machine import importable
from rclib.speed.model import random_images
from rclib.speed.probes import encode_probed, generate_timed, llm_run, rclib_rc_work, released_second_forward

RELEASED_WAY = "rc (released way)"  # the e2e row of the released code's way


def released_way_skipped(model: CompressedModel) -> str | None:
    """Why the released code's way of doing RC's work is not run on ``model``, as the results say it (None: it runs)."""
    if model.family.model_type != "llava":
        return f"not run (it works on LLaVA-1.5's one grid of patches, not on {model.family.title}'s tiles)"
    if not importable("sklearn"):
        return "not run (it needs scikit-learn: pip install scikit-learn)"
    return None


def placement(method: str) -> str:
    """Where an end-to-end row's method prunes (the released way compresses before the LLM)."""
    return "before_llm" if method == RELEASED_WAY else METHODS[method].placement


def e2e_rows(model: CompressedModel, config: SpeedConfig) -> tuple[list[dict], dict]:
    """B = 1 end to end per method (medians of ``config.repeats`` runs after a warm-up), and the
    released code's way against rclib's on the same inputs where it runs (:func:`released_way_skipped`)."""
    watch, images, questions = config.stopwatch, random_images(1, config.shapes.photo_size), [QUESTION]
    skipped = released_way_skipped(model)
    text_embed = model.text_tower.embed_text(questions)  # common to both ways of RC's work: not timed
    runs: list[dict[str, dict]] = []  # per repeat: method -> its row
    released: dict[str, list[float]] = {}  # rclib's and the released way's RC work, per run
    for repeat in range(config.repeats + 1):
        encoded, t_encode, t_vision, caught = encode_probed(model, images, questions, watch)
        if repeat == 0:  # a warm-up pass through the vision tower and the LLM, dropped
            llm_run(model, encoded, "rc", config.new_tokens, watch)
            continue
        rows = {method: llm_run(model, encoded, method, config.new_tokens, watch) for method in config.methods}
        if skipped is None:
            ours, t_ours = watch(rclib_rc_work, model, encoded, caught, text_embed)
            patch_embeds, t_forward = watch(released_second_forward, model, encoded)
            theirs, t_rest = watch(released_compress, caught["q"], caught["k"], encoded.features, patch_embeds,
                                   text_embed.to(patch_embeds.dtype))
            # the LLM after the released way: the cost of any input of its K tokens (at least one)
            same_k = model.compress(encoded, "fastervlm", budget=max(1, theirs.shape[1]))
            rows[RELEASED_WAY] = {"tokens": theirs.shape[1], "compress_s": t_forward + t_rest,
                                  **generate_timed(model, encoded, same_k, config.new_tokens, watch)}
            for name, value in (("rclib_s", t_ours), ("released_s", t_forward + t_rest),
                                ("released_second_forward_s", t_forward), ("released_rest_s", t_rest),
                                ("tokens_rclib", int(ours.n_output[0])), ("tokens_released", theirs.shape[1])):
                released.setdefault(name, []).append(value)
        for row in rows.values():
            row.update(vision_s=t_vision, text_s=t_encode - t_vision, total_s=t_encode + row["compress_s"]
                       + row["generate_s"])
        add_bounds(rows)
        runs.append(rows)
    rows = [{"method": method, "batch": 1, "n_tokens": encoded.n_tokens, "prunes": placement(method),
             **median_row([run[method] for run in runs])} for method in runs[0]]
    if skipped is not None:
        return rows, {"skipped": skipped}
    released = {name: statistics.median(values) for name, values in released.items()}
    released["speedup"] = released["released_s"] / released["rclib_s"]
    released["speedup_without_second_forward"] = released["released_rest_s"] / released["rclib_s"]
    return rows, released


def median_row(measured: list[dict]) -> dict:
    """The median of each quantity over runs (None where a run has none)."""
    return {name: None if any(run[name] is None for run in measured)
            else statistics.median(run[name] for run in measured) for name in measured[0]}


def add_bounds(rows: dict[str, dict]) -> None:
    """Each row's bound, within one run (method -> row): the best total any compressor before the LLM
    keeping the same K could reach, its vision and text time plus the LLM's time at K, with a
    compression that costs nothing.

    The LLM time at K is the median generation time of the run's before-LLM rows with K tokens (the
    LLM does not care which method chose them). ``bound_share`` = bound / total (1: the method costs
    nothing beyond its K; inside-LLM methods also pay for every token in their early layers); None
    where no before-LLM row has that K.
    """
    by_tokens: dict[int, list[float]] = {}
    for method, row in rows.items():
        if placement(method) == "before_llm":
            by_tokens.setdefault(row["tokens"], []).append(row["generate_s"])
    for row in rows.values():
        llm = by_tokens.get(row["tokens"])
        row["bound_s"] = row["vision_s"] + row["text_s"] + statistics.median(llm) if llm else None
        row["bound_share"] = row["bound_s"] / row["total_s"] if llm else None
        row["compress_share_of_vision"] = row["compress_s"] / row["vision_s"]


def batch_rows(model: CompressedModel, config: SpeedConfig) -> list[dict]:
    """Images per second at each batch size, all tokens vs rc (one timed run each, after the B = 1 warm-up)."""
    watch, rows = config.stopwatch, []
    for batch in config.batches:
        images, questions = random_images(batch, config.shapes.photo_size, seed=batch), [QUESTION] * batch
        for method in ("full", "rc"):
            encoded, t_encode, t_vision, _ = encode_probed(model, images, questions, watch)
            result, t_compress = watch(model.compress, encoded, method)
            llm = generate_timed(model, encoded, result, config.new_tokens, watch)
            total = t_encode + t_compress + llm["generate_s"]
            rows.append({"method": method, "batch": batch, "tokens_per_sample": result.n_output.tolist(),
                         "vision_s": t_vision, "compress_s": t_compress, "prefill_s": llm["prefill_s"],
                         "decode_tokens_per_s": llm["decode_tokens_per_s"], "total_s": total,
                         "images_per_s": batch / total})
    return rows
