"""rclib.experiments: the shuffled-order variant changes only the order of the selected tokens."""
import torch

import rclib
from rclib.bench import Cell, run_cells
from rclib.experiments import run_experiment, shuffle_selected, shuffled
from rclib.result import Slot
from rclib.shapes.world import sample_vqa


def test_shuffle_selected_permutes_only_kept_and_recovered_slots():
    torch.manual_seed(0)
    tokens, attn, text, keys = torch.randn(2, 36, 8), torch.rand(2, 36), torch.randn(2, 36), torch.randn(2, 36, 8)
    result = rclib.compress(tokens, attn, text, keys, method="rc", budget=20)
    shuffled = shuffle_selected(result, seed=1)
    selected = (result.slot == Slot.KEPT) | (result.slot == Slot.RECOVERED)
    assert torch.equal(shuffled.mask, result.mask) and torch.equal(shuffled.fate, result.fate)
    assert torch.equal(shuffled.tokens[~selected], result.tokens[~selected]), "merged tokens keep their places"
    for b in range(2):
        before, after = result.tokens[b][selected[b]], shuffled.tokens[b][selected[b]]
        assert not torch.equal(before, after), "the order changed"
        assert torch.equal(before.sort(0).values, after.sort(0).values), "the same tokens"
    assert torch.allclose(torch.bmm(shuffled.weights, tokens), shuffled.tokens, atol=1e-5), "weights moved along"


def test_an_experiment_gives_one_bench_row_per_cell(tiny_model):
    cells = [Cell("rc", "rc"), Cell("rc, no text", "rc", options={"text_stage": False}),
             shuffled("rc 8, shuffled", budget="8"), Cell("rc 8", "rc", "8")]
    rows = run_experiment(tiny_model, cells, n=3)
    assert [(r["method"], r["budget"], r["n"]) for r in rows] == [
        ("rc", "adaptive", 3), ("rc, no text", "adaptive", 3), ("rc 8, shuffled", 8, 3), ("rc 8", 8, 3)]
    shuffled_row, plain_row = rows[2], rows[3]
    for key in ("mean_tokens", "evidence_recall", "evidence_kept"):  # the shuffle moves tokens, not fates
        assert shuffled_row[key] == plain_row[key], key
    assert plain_row["mean_tokens"] <= 8


def test_cells_with_encode_options_read_their_own_encoding_once_per_batch(tiny_model, monkeypatch):
    encodes, texts = [], []
    encode, run = tiny_model.encode, tiny_model.run
    monkeypatch.setattr(tiny_model, "encode", lambda *a, **k: encodes.append(k) or encode(*a, **k))
    monkeypatch.setattr(tiny_model, "run", lambda encoded, *a, **k: texts.append(encoded.text_inputs[0]) or run(encoded, *a,
                                                                                                          **k))
    released = {"preset": "released"}
    cells = [Cell("question", "rc"), Cell("released text", "rc", encode_options=released),
             Cell("released", "rc", options=released, encode_options=released)]
    rows = run_cells(tiny_model, sample_vqa(1234, 3), cells, batch_size=2)
    assert encodes == [{}, released, {}, released], "two batches, each encoded once per set of encode options"
    question_text = sample_vqa(1234, 3)[0].question
    assert texts[:3] == [question_text, "<s> USER:", "<s> USER:"], "the released text is the prompt's first line"
    assert [r["method"] for r in rows] == ["question", "released text", "released"]
