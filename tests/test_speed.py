"""rclib speed: the runner at toy shapes (a smoke test, no time is asserted), and the pieces it measures with."""
import argparse
import json

import pytest
import torch

from rclib import compress, cost
from rclib.methods import METHODS
from rclib.methods.released_reference import released_compress
from rclib.models.text import text_similarity
from rclib.models.vision import cls_attention
from rclib.speed import BENCH_METHODS, SpeedConfig, add_bounds, add_command, machine_name, peak_extra_bytes
from rclib.speed.analytic import cost_rows

SUMMARY = ("bound_share_rc", "compress_share_of_vision_rc", "speedup_vs_released_compress", "compress_ms_rc",
           "compress_ms_fastervlm")


def run_speed_command(*flags: str) -> None:
    """``rclib speed`` with ``flags``, through the sub-command's parser."""
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    args = parser.parse_args(["speed", *flags])
    args.run(args)


def test_quick_run_writes_every_section(tmp_path):
    run_speed_command("--quick", "--clock", "cpu", "--out", str(tmp_path))
    [json_path] = tmp_path.glob("speed-*-cpu-clock-quick.json")
    results = json.loads(json_path.read_text())
    assert all(isinstance(results["summary"][name], float) for name in SUMMARY)
    assert results["config"]["clock"] == "cpu" and results["machine"]["e2e_threads"] == 1
    assert {row["method"] for row in results["compress"]} == {m for m in BENCH_METHODS if METHODS[m].placement == "before_llm"}
    assert [row["method"] for row in results["e2e"]] == [*BENCH_METHODS, "rc (released way)"]
    assert all(row["total_s"] > 0 and row["decode_tokens_per_s"] > 0 for row in results["e2e"])
    assert [(row["method"], row["batch"]) for row in results["batch"]] == [
        ("full", 1), ("rc", 1), ("full", 2), ("rc", 2)]
    assert len(results["batch"][3]["tokens_per_sample"]) == 2
    assert all(row["ratio"] == 1 for row in results["cost"]["flop_check"])  # the formula is what torch counts
    assert results["released"]["tokens_rclib"] == results["released"]["tokens_released"]
    table = json_path.with_suffix(".md").read_text()
    for heading in ("## Summary", "## Compression step", "## End to end", "## Batch scaling",
                    "## Analytic prefill cost", "## LOF count agreement"):
        assert heading in table


def test_quick_llava_next_run_measures_at_its_token_count(tmp_path):
    run_speed_command("--quick", "--clock", "cpu", "--model-shape", "llava-next", "--methods", "fastervlm", "pool",
                      "fastv", "--out", str(tmp_path))
    [json_path] = tmp_path.glob("speed-*-llava-next-cpu-clock-quick.json")
    results = json.loads(json_path.read_text())
    n = (1 + 1 * 2) * (112 // 8) ** 2  # --quick: a 112 x 224 photo, its base view and 1 x 2 tiles of 14 x 14 patches
    assert results.keys() == {"machine", "config", "refused", "compress", "filters", "filter_agreement", "launches",
                              "e2e", "released", "batch", "cost", "summary"}
    assert results["config"]["model_shape"] == "llava-next" and results["config"]["shapes"]["n_tokens"] == n
    assert list(results["refused"]) == ["pool"]  # 588 tokens are no square grid
    assert [(row["method"], row["n_tokens"]) for row in results["compress"]] == [("full", n), ("rc", n),
                                                                               ("fastervlm", n)]
    assert [(row["method"], row["n_tokens"]) for row in results["e2e"]] == [("full", n), ("rc", n), ("fastervlm", n),
                                                                          ("fastv", n)]  # as the model encodes
    assert all(row["total_s"] > 0 and row["vision_s"] > 0 for row in results["e2e"])
    assert results["released"].keys() == {"skipped"}
    assert results["summary"]["targets_met"].keys() == {"compress_rc_over_fastervlm", "compress_share_of_vision_rc",
                                                        "peak_extra_mib_rc"}
    assert all(isinstance(results["summary"][name], float) for name in results["summary"]["targets_met"])
    assert results["summary"]["memory_batch"] == 4  # --quick's; the real shapes' is 16
    assert ("llava-next-7b", "full", n) in {(r["model"], r["setting"], r["mean_image_tokens"])
                                            for r in results["cost"]["rows"]}
    assert f"## End to end, B = 1, N = {n}" in json_path.with_suffix(".md").read_text()


def test_llava_next_shapes_are_the_real_ones():
    config = SpeedConfig(model_shape="llava-next")
    assert config.shapes.grid_pinpoints == [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    assert config.shapes.photo_size == (672, 672) and config.shapes.n_tokens == 2880 and config.memory_batch == 16
    assert SpeedConfig().shapes.n_tokens == 576 and SpeedConfig().memory_batch == 64


def test_released_way_computes_what_rc_released_computes():
    """The baseline does the same work as preset='released': same tokens, from the hooked q / k, the
    projected final patches and the text embedding."""
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        n, width, joint = 576, 1024, 768
        queries, keys = torch.randn(1, 1 + n, width, generator=g), torch.randn(1, 1 + n, width, generator=g)
        queries[:, 0] *= 3  # a peaked [CLS] attention
        features, patches = torch.randn(1, n, width, generator=g), torch.randn(1, n, joint, generator=g)
        text = torch.randn(1, joint, generator=g)
        theirs = released_compress(queries, keys, features, patches, text)
        ours = compress(features, cls_attention(queries, keys), text_similarity(text, patches), keys[:, 1:],
                        method="rc", preset="released", text_dim=joint)
        assert ours.tokens.shape == theirs.shape
        torch.testing.assert_close(ours.tokens, theirs, rtol=1e-4, atol=1e-4)


def test_peak_extra_bytes_follows_allocations_and_frees():
    def work():
        first = torch.empty(10_000_000, dtype=torch.uint8)
        second = torch.empty(20_000_000, dtype=torch.uint8)
        del first
        third = torch.empty(5_000_000, dtype=torch.uint8)
        return second, third

    assert peak_extra_bytes(work, torch.device("cpu")) == 30_000_000


def test_bound_is_the_llm_time_at_the_same_k_with_free_compression():
    def row(tokens, compress_s, generate_s):
        return {"tokens": tokens, "vision_s": 1.0, "text_s": 0.5, "compress_s": compress_s, "generate_s": generate_s,
                "total_s": 1.5 + compress_s + generate_s}

    rows = {"rc": row(64, 0.5, 2.0), "fastervlm": row(64, 0.0, 3.0), "fastv": row(64, 0.0, 4.0),
            "rc (released way)": row(32, 1.0, 1.5)}
    add_bounds(rows)
    # rc, fastervlm: 1 + 0.5 + median(2, 3); fastv prunes inside the LLM: not in the median, bound as the others'
    assert [r["bound_s"] for r in rows.values()] == [4.0, 4.0, 4.0, 3.0]
    assert [r["bound_share"] for r in rows.values()] == [1.0, 4.0 / 4.5, 4.0 / 5.5, 3.0 / 4.0]
    assert rows["rc"]["compress_share_of_vision"] == 0.5
    rows = {"fastv": row(10, 0.0, 4.0)}  # no before-LLM row keeps its K: no bound
    add_bounds(rows)
    assert rows["fastv"]["bound_s"] is None and rows["fastv"]["bound_share"] is None


def test_bad_settings_say_what_to_do():
    for settings, message in (({"dtype": "fp8"}, "dtype must be one of"), ({"lm": "70b"}, "lm must be one of"),
                              ({"methods": ("oracle",)}, "cannot be timed here"),
                              ({"repeats": 0}, "repeats and batches must be >= 1"),
                              ({"clock": "cpu", "threads": 2}, "one thread's CPU time"),
                              ({"model_shape": "llava-2"}, "model_shape must be one of")):
        with pytest.raises(ValueError, match=message):
            SpeedConfig(**settings)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            SpeedConfig(device="cuda")
    assert set(cost.ARCHS) >= {"tinyllama", "7b", "13b"}


def test_machine_name_is_a_file_name():
    assert machine_name({"device": "cpu", "cpu": "AMD EPYC 7B13 64-Core Processor", "cores": 2}) == "amd-epyc-7b13-2c"
    assert machine_name({"device": "NVIDIA H100 80GB HBM3", "cpu": "x", "cores": 16}) == "nvidia-h100-80gb-hbm3"


def test_cost_rows_say_where_the_methods_own_plans_prune():
    prunes = {row["setting"]: row["prunes"] for row in cost_rows(58) if row["model"] == "llava-1.5-7b"}
    assert prunes["fastv at 64"] == "inside: all tokens in layers 0-1"
    assert prunes["sparsevlm at 64"] == "inside: all tokens in layers 0-2, pruned again before layers 7, 16"
