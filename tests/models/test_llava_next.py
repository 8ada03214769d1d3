"""LLaVA-NeXT through the family interface: identity with transformers, tiles of different layouts in one batch,
every method, token counts in the model's units, row-end tokens."""
import pytest
import torch
from family_checks import (QUESTIONS, assert_batch_equals_single, assert_full_is_transformers,
                           assert_llm_input_is_transformers)

from rclib.methods import METHODS

MAX_NEW = 6


def test_batch_mixes_tile_layouts(next_model, tiled_images):
    encoded = next_model.encode(tiled_images, QUESTIONS)
    counts = encoded.token_counts.tolist()
    assert len(set(counts)) == 3, f"the three images should give three token counts, got {counts}"
    assert all(c > 64 for c in counts), "base view (64) plus tiles"
    assert encoded.grid is None
    ids = encoded.input_ids
    placeholders = (ids == next_model.model.config.image_token_id).sum(1)
    assert placeholders.tolist() == encoded.n_llm_tokens.tolist(), "what the processor expands = what rclib counts"


def test_full_is_identical_to_transformers_generate(next_model, tiled_images):
    assert_full_is_transformers(next_model, tiled_images, MAX_NEW)


def test_full_llm_input_equals_transformers_own(next_model, tiled_images):
    """The spliced inputs of all tokens (newlines included) are transformers' inputs_embeds, row by row."""
    encoded = next_model.encode(tiled_images[:1], QUESTIONS[:1])
    assert_llm_input_is_transformers(next_model, tiled_images[:1], encoded)


@pytest.mark.parametrize("method", [m for m in METHODS if "target" not in METHODS[m].needs and m != "pool"])
def test_batch_equals_single_for_every_method(next_model, tiled_images, method):
    assert_batch_equals_single(next_model, tiled_images, method, None if METHODS[method].adaptive else 40)


def test_counts_are_in_the_models_units(next_model, tiled_images):
    run = next_model.answer(tiled_images[2], QUESTIONS[2], method="fastervlm", budget=30, max_new_tokens=2)
    counts = run.counts(0)
    assert counts["n_input_tokens"] == int(run.encoded.n_llm_tokens[0])
    assert counts["n_input_tokens"] > int(run.encoded.token_counts[0]), "row ends counted in"
    kept = run.result.kept_indices[0]
    assert len(kept) == 30 and torch.equal(kept, kept.sort().values)
    rows = run.encoded.token_rows[0, kept]
    tile_rows = len(set(rows[rows >= 0].tolist()))
    assert counts["n_output_tokens"] == 30 + tile_rows, "one row end per tile row that kept a token"
    full = next_model.run(run.encoded, "full", max_new_tokens=2).counts(0)
    assert full["n_output_tokens"] == full["n_input_tokens"]


def test_newlines_none_drops_row_ends(tiny_next_dir, tiny_clip_dir, tiled_images):
    from rclib.models import load

    model = load(tiny_next_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32, newlines="none")
    run = model.answer(tiled_images[0], QUESTIONS[0], method="fastervlm", budget=30, max_new_tokens=2)
    assert run.counts(0)["n_output_tokens"] == 30
    with pytest.raises(ValueError, match="newlines must be one of"):
        load(tiny_next_dir, text_encoder=tiny_clip_dir, device="cpu", newlines="some")


@pytest.mark.parametrize("method, budget", [("rc", None), ("visionzip", 30), ("fastv", 30)])
def test_answer_json_contract(tmp_path, tiny_next_dir, tiny_clip_dir, next_model, tiled_images, capsys, method, budget):
    import json

    from PIL import Image

    from rclib.cli import main

    image = tmp_path / "image.png"
    Image.fromarray(tiled_images[1]).save(image)
    args = ["answer", "--model", str(tiny_next_dir), "--text-encoder", str(tiny_clip_dir), "--image", str(image),
            "--question", QUESTIONS[1], "--method", method, "--json", *(["--budget", str(budget)] if budget else [])]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    encoded = next_model.encode([Image.open(image)], [QUESTIONS[1]])
    assert record["n_input_tokens"] == int(encoded.n_llm_tokens[0])
    assert 0 < record["n_output_tokens"] < record["n_input_tokens"]
    assert record["kept_indices"] == sorted(record["kept_indices"])
    assert isinstance(record["answer"], str)


def test_a_method_that_needs_one_square_grid_is_refused_by_family(next_model, tiled_images):
    encoded = next_model.encode(tiled_images[:1], QUESTIONS[:1])
    with pytest.raises(ValueError, match="'pool' reads each image as one square patch grid, but a LLaVA-NeXT image"):
        next_model.compress(encoded, "pool", budget=16)


def test_a_budget_per_crop_gives_each_crop_its_share(tiny_next_dir, tiny_clip_dir, tiled_images):
    """budget_scope="crop" (the peers' released way): each crop keeps an equal share, base view first."""
    from rclib.models import load

    model = load(tiny_next_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32, budget_scope="crop")
    encoded = model.encode(tiled_images, QUESTIONS)
    result = model.compress(encoded, "fastervlm", budget=30)
    for b in range(3):
        crops = encoded.token_crops[b, :int(encoded.token_counts[b])]
        n_crops = int(crops.max()) + 1
        kept = crops[result.kept_indices[b]]
        shares = [30 // n_crops + (c < 30 % n_crops) for c in range(n_crops)]
        assert torch.bincount(kept, minlength=n_crops).tolist() == shares
        scores = encoded.cls_attn_head_mean[b, :len(crops)]
        top = scores[crops == 0].topk(shares[0]).indices  # the base view's own top tokens
        assert set(torch.nonzero(crops == 0).flatten()[top].tolist()) == set(result.kept_indices[b][:shares[0]].tolist())
    with pytest.raises(ValueError, match="budget_scope='crop' shares a budget among the crops before the LLM"):
        model.answer(tiled_images[0], QUESTIONS[0], method="fastv", budget=30, max_new_tokens=2)
    batch = model.answer(tiled_images, QUESTIONS, method="rc", max_new_tokens=MAX_NEW)
    for b in range(3):
        assert batch.texts[b] == model.answer(tiled_images[b], QUESTIONS[b], method="rc", max_new_tokens=MAX_NEW).texts[0]
