"""Training batches: the conversation layout, the one splice, and the grounded head's attention."""
import pytest
import torch
from PIL import Image

from rclib.models.families.llava import splice_image_tokens
from rclib.models.llm_pruning import attention_rows
from rclib.shapes.build import PROMPT_TEMPLATE, ShapesModelConfig, build_all
from rclib.shapes.data import MAX_NAMED, OBJECT_WORDS, PAIR_SIDES, PromptLayout, conversation_batch, make_bank
from rclib.shapes.llava_losses import grounding_loss, lm_forward, onto_position_loss
from rclib.shapes.llava_stages import word_targets
from rclib.shapes.world import COLORS, DIGITS, FAMILIES, GRID_SIZE, LETTERS, NUM_PATCHES, RELATIONS, SHAPES

SMALL = ShapesModelConfig(vision_width=32, text_width=32, lm_width=32, lm_mlp=64, projection_dim=16)


@pytest.fixture(scope="module")
def setup():
    _, _, llava, processor = build_all(SMALL)
    bank = make_bank(5, 3, per_scene=5, workers=1)
    return llava, processor, bank, PromptLayout(processor.tokenizer)


def test_first_turn_matches_the_processor_prompt_and_names_point_at_words(setup):
    _, processor, bank, layout = setup
    conv = conversation_batch(layout, bank, [[0], [6]])
    for b, row in enumerate((0, 6)):
        image = Image.fromarray(bank.images[bank.q_scene[row]].numpy())
        expected = processor(images=[image], text=[PROMPT_TEMPLATE.format(question=bank.q_text[row])],
                             return_tensors="pt")["input_ids"][0]
        real = conv.ids[b][conv.attention_mask[b].bool()]
        assert torch.equal(real[: len(expected)], expected)
        assert conv.target_pos[b, 0] == conv.ids.shape[1] - len(real) + len(expected) - 1
        tokens = processor.tokenizer.convert_ids_to_tokens(conv.ids[b])
        words = bank.q_text[row].split()
        for k, end in enumerate(bank.q_name_end[row].tolist()):
            if end >= 0:
                assert tokens[conv.name_pos[b, 0, k]] == words[end]
        assert tokens[conv.image_start[b]] == "<image>" and tokens[conv.image_start[b] - 1] == ":"


def test_multi_turn_targets_follow_each_answer(setup):
    _, processor, bank, layout = setup
    conv = conversation_batch(layout, bank, [[0, 1, 2], [5]])
    eos = processor.tokenizer.eos_token_id
    for t, r in enumerate((0, 1, 2)):
        position = conv.target_pos[0, 2 * t]
        answer = processor.tokenizer.convert_tokens_to_ids(bank.q_answer[r])
        assert conv.ids[0, position + 1] == answer == conv.targets[0, 2 * t]
        assert conv.ids[0, position + 2] == eos == conv.targets[0, 2 * t + 1]
    assert (conv.targets[1, 2:] == -100).all() and (conv.name_pos[1, 1:] == -1).all()


def test_splice_matches_llava_own_merge(setup):
    llava, _, bank, layout = setup
    conv = conversation_batch(layout, bank, [[0], [5, 6]])
    features = torch.randn(2, NUM_PATCHES, SMALL.vision_width)
    embeds, mask = splice_image_tokens(llava, conv.ids, conv.attention_mask, features,
                                       torch.full((2,), NUM_PATCHES), NUM_PATCHES)
    reference = llava.get_input_embeddings()(conv.ids)
    image = conv.ids == llava.config.image_token_id
    reference[image] = llava.model.multi_modal_projector(features).flatten(0, 1)
    real = conv.attention_mask.bool()
    assert torch.equal(mask, conv.attention_mask)
    torch.testing.assert_close(embeds[real], reference[real])
    cut = splice_image_tokens(llava, conv.ids, conv.attention_mask, features, torch.tensor([10, 3]), NUM_PATCHES)[1]
    assert cut.sum(1).tolist() == (conv.attention_mask.sum(1) - torch.tensor([NUM_PATCHES - 10, NUM_PATCHES - 3])).tolist()


def test_attention_rows_equal_eager_attention_weights(setup):
    llava, _, bank, layout = setup
    conv = conversation_batch(layout, bank, [[0, 1], [7]])
    features = torch.randn(2, NUM_PATCHES, SMALL.vision_width)
    lm = llava.model.language_model
    implementation = lm.config._attn_implementation
    lm.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            embeds, mask = splice_image_tokens(llava, conv.ids, conv.attention_mask, features,
                                               torch.full((2,), NUM_PATCHES), NUM_PATCHES)
            eager = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=conv.position_ids,
                       output_attentions=True).attentions[1]  # (B, H, L, L)
            _, reads, _ = lm_forward(llava, conv, features, caught_layers=(1,))
            query = conv.name_pos.flatten(1)
            ours = attention_rows(*reads[1], query, conv.attention_mask.bool(), head=2)
    finally:
        lm.config._attn_implementation = implementation
    for b in range(2):
        for q, position in enumerate(query[b].tolist()):
            if position >= 0:
                torch.testing.assert_close(ours[b, q], eager[b, 2, position], atol=1e-5, rtol=1e-4)


def test_grounding_loss_of_uniform_attention(setup):
    _, _, bank, layout = setup
    conv = conversation_batch(layout, bank, [[0, 3], [4]])
    L = conv.ids.shape[1]
    Q = conv.name_pos.flatten(1).shape[1]
    uniform = torch.full((2, Q, L), 1.0 / L)
    named = conv.named.flatten(1, 2)
    valid = conv.name_pos.flatten(1) >= 0
    expected = -torch.log(named.sum(-1)[valid].float() / L + 1e-6).mean()
    torch.testing.assert_close(grounding_loss(uniform, conv.image_start, named, valid), expected)
    previous = conv.previous_pos.flatten(1)
    assert ((previous >= 0) <= valid).all()
    if (previous >= 0).any():
        torch.testing.assert_close(onto_position_loss(uniform, previous), torch.tensor(-torch.log(torch.tensor(1.0 / L + 1e-6)).item()))


def test_coarse_masks_hold_the_named_object_and_first_words_are_colours(setup):
    _, processor, bank, layout = setup
    conv = conversation_batch(layout, bank, [[0, 1, 2, 3, 4]])
    assert (conv.coarse | ~conv.named).all(), "the named object shares its own last word"
    tokens = processor.tokenizer.convert_ids_to_tokens(conv.ids[0])
    for position in conv.previous_pos[0].flatten().tolist():
        if position >= 0:
            assert tokens[position] in COLORS


def test_slots_point_at_relation_options_letters_and_object_words(setup):
    """One question of each family in one conversation: each slot names the word (or patches) it claims."""
    _, processor, bank, layout = setup
    families = set()
    for scene in range(len(bank)):  # each scene's questions, one of each family (round-robin), in one conversation
        rows = torch.nonzero(bank.q_scene == scene).flatten().tolist()
        conv = conversation_batch(layout, bank, [rows])
        tokens = processor.tokenizer.convert_ids_to_tokens(conv.ids[0])
        check_slots(conv, tokens, bank, rows, families)
    assert families == set(FAMILIES)


def check_slots(conv, tokens, bank, rows, families):
    for t, r in enumerate(rows):
        family = FAMILIES[int(bank.q_family[r])]
        families.add(family)
        relation = int(conv.relation_pos[0, t])
        assert (relation >= 0) == (family == "position")
        if relation >= 0:
            assert tokens[relation] in {rel.split()[0] for rel in RELATIONS}
        letters, options = conv.letter_pos[0, t].tolist(), conv.option_pos[0, t].tolist()
        assert (min(letters + options) >= 0) == (family == "choice") and (max(letters + options) >= 0) == (family == "choice")
        if family == "choice":
            assert [tokens[p] for p in letters] == list(LETTERS)
            assert all(tokens[p] in COLORS for p in options) and all(o == l + 2 for l, o in zip(letters, options))
            assert bank.q_answer[r] in LETTERS
            assert tokens[int(conv.chosen_pos[0, t])] == list(COLORS)[int(conv.object_words[0, t, 0, 0])], "the answer's option names the object's colour"
        else:
            assert conv.chosen_pos[0, t] == -1
        sides = conv.pair_sides[0, t].tolist()
        if family == "position":  # the asked axis is always clear (min_offset apart): its side decides the answer
            word = tokens[relation]
            axis = next(a for a, pair in enumerate(PAIR_SIDES) if word in pair)
            assert (PAIR_SIDES[axis][sides[axis]] == word) == (bank.q_answer[r] == "yes")
            verdict = relation if bank.q_answer[r] == "yes" else int(conv.target_pos[0, 2 * t])
            assert conv.verdict_pos[0, t] == verdict, "the relation word when it holds, else the answer position"
            assert tokens[int(conv.target_pos[0, 2 * t]) + 1] == bank.q_answer[r]
        else:
            assert sides == [-1, -1], "sides only between two named objects"
            assert conv.verdict_pos[0, t] == -1
        halves = conv.name_halves[0, t]  # (MAX_NAMED, 2): each named object's half of the image per axis
        assert ((halves >= 0).any(-1) <= (conv.name_pos[0, t] >= 0)).all(), "halves only of named objects"
        grid = torch.arange(NUM_PATCHES)
        for k in range(MAX_NAMED):
            mask = conv.named[0, t, k].float()
            if mask.sum() == 0:
                continue
            centre = [(mask * (grid % GRID_SIZE)).sum() / mask.sum(), (mask * (grid // GRID_SIZE)).sum() / mask.sum()]
            for axis in range(2):  # the patch mask's centre (in patches) lies in the half the target names
                if halves[k, axis] >= 0:
                    assert (centre[axis] + 0.5 > GRID_SIZE / 2) == bool(halves[k, axis]), (k, axis, centre)
        assert not (conv.glyph[0, t] & ~conv.named[0, t]).any(), "digit patches lie on the named object"
        if family == "glyph":
            assert int(conv.glyph[0, t, 0].sum()) == 4 and DIGITS[int(conv.object_words[0, t, 0, 2])] == bank.q_answer[r]
        if family == "attribute":
            assert bank.q_answer[r] in [words[int(i)] for words, i in zip(OBJECT_WORDS.values(), conv.object_words[0, t, 0, :2])]
        digit = conv.object_words[0, t, :, 2]
        assert ((digit >= 0) == conv.glyph[0, t].any(-1)).all(), "a digit exactly where there are digit patches"
        for k, position in enumerate(conv.name_pos[0, t].tolist()):
            color, shape = conv.object_words[0, t, k, :2].tolist()
            assert (position >= 0) == (color >= 0) == (shape >= 0), "words exactly for the named objects"
            if position >= 0:
                assert tokens[position] in (list(COLORS)[color], SHAPES[shape]), "the name's last word is the object's"


def test_word_targets_name_each_object_patch_and_grade_its_position(setup):
    """Stage 3a's targets: an object patch scores its colour and shape words, background patches nothing; the
    side words split 1 between "left" / "right" (and "above" / "below"), "right" growing with the column."""
    _, processor, bank, _ = setup
    tokenizer = processor.tokenizer
    target = word_targets(tokenizer, bank, torch.arange(len(bank)), len(tokenizer))  # (S, P, V)
    objects = bank.patch_labels["color"] < len(COLORS)
    assert objects.any() and (~objects).any()
    assert (target[~objects] == 0).all(), "background patches score no word"
    color_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(COLORS)))
    s, p = torch.nonzero(objects, as_tuple=True)
    assert (target[s, p, color_ids[bank.patch_labels["color"][s, p]]] == 1).all()
    for (first, second), coordinate in zip(PAIR_SIDES, (p % GRID_SIZE, p // GRID_SIZE)):
        low, high = tokenizer.convert_tokens_to_ids([first, second])
        assert torch.allclose(target[s, p, low] + target[s, p, high], torch.ones(len(p)))
        assert torch.allclose(target[s, p, high], coordinate / (GRID_SIZE - 1))


def test_shortened_conversations_point_at_the_same_words_and_tokens(setup):
    from dataclasses import replace

    from rclib.shapes.data import shorten
    from rclib.shapes.recipe import TrainConfig
    from rclib.shapes.shortening import random_shortening

    llava, processor, bank, layout = setup
    conv = conversation_batch(layout, bank, [[0, 1, 2], [5], [7, 8]])
    generator = torch.Generator().manual_seed(3)
    weights = random_shortening(3, generator, replace(TrainConfig(), shorten_share=1.0, merge_share=0.5))
    short = shorten(conv, weights)
    n_output = (weights.sum(-1) > 0).sum(-1)
    features = torch.randn(3, NUM_PATCHES, SMALL.vision_width)
    _, mask = splice_image_tokens(llava, conv.ids, conv.attention_mask, weights @ features, n_output, NUM_PATCHES)
    assert torch.equal(mask, short.attention_mask)
    image = processor.tokenizer.convert_tokens_to_ids("<image>")
    for b in range(3):
        assert int((short.ids[b] == image).sum()) == n_output[b]
        assert short.ids[b, short.image_start[b]] == image and short.ids[b, short.image_start[b] - 1] != image
        for field in ("target_pos", "name_pos", "relation_pos", "option_pos", "verdict_pos"):
            old, new = getattr(conv, field)[b], getattr(short, field)[b]
            on = old >= 0 if field != "target_pos" else conv.targets[b] != -100
            assert torch.equal(conv.ids[b][old[on]], short.ids[b][new[on]]), field
    on = (weights > 0).float()
    expected = torch.einsum("tnp,kp->tnk", conv.named[0].float(), on[0]) > 0
    assert torch.equal(short.named[0], expected) and short.named.shape[-1] == weights.shape[1]


def test_random_shortening_keeps_order_and_mixes_means_and_weighted_sums(setup):
    from dataclasses import replace

    from rclib.shapes.recipe import TrainConfig
    from rclib.shapes.shortening import random_shortening

    cfg = replace(TrainConfig(), shorten_share=0.5)
    weights = random_shortening(64, torch.Generator().manual_seed(0), cfg)
    full = [b for b in range(64) if weights.shape[1] == NUM_PATCHES and torch.equal(weights[b], torch.eye(NUM_PATCHES))]
    assert 0 < len(full) < 64, "a share of the rows keeps every patch, the rest are shortened"
    kinds = set()
    for b in range(64):
        rows = weights[b][weights[b].sum(-1) > 0]
        members = rows > 0
        mass = rows.sum(-1)
        if torch.allclose(mass, torch.ones(len(rows))):
            equal = torch.where(members, rows, rows.max(-1, keepdim=True).values)
            torch.testing.assert_close(equal, rows.max(-1, keepdim=True).values.expand_as(rows))  # means
            kinds.add("subset" if (members.sum(-1) == 1).all() else "means")
        else:  # weighted sums: any total weight in merge_mass, unequal weights within a group
            low, high = cfg.merge_mass
            assert ((mass >= low * 0.999) & (mass <= high * 1.001)).all()
            kinds.add("sums")
        if (members.sum(-1) == 1).all():  # a subset: its patches in raster order
            assert (rows.argmax(-1).diff() > 0).all(), "tokens keep the patches' raster order"
        assert ((weights[b] > 0).sum(0) <= 1).all(), "a patch belongs to one token at most"
    assert kinds == {"subset", "means", "sums"}, kinds


def test_clustered_anchors_keep_a_few_regions_of_neighbours():
    from rclib.shapes.shortening import clustered_anchors
    from rclib.shapes.world import GRID_SIZE

    generator = torch.Generator().manual_seed(0)

    def neighbour_share(anchors: torch.Tensor) -> float:  # share of kept patches with a kept 4-neighbour
        kept = torch.zeros(NUM_PATCHES, dtype=torch.bool)
        kept[anchors] = True
        grid = torch.nn.functional.pad(kept.view(GRID_SIZE, GRID_SIZE).float(), (1, 1, 1, 1))
        around = grid[:-2, 1:-1] + grid[2:, 1:-1] + grid[1:-1, :-2] + grid[1:-1, 2:]
        return float((around.flatten()[anchors] > 0).float().mean())

    for k in (8, 32, 64):  # sparse enough that scattered patches seldom touch
        anchors = clustered_anchors(k, generator)
        assert len(anchors) == k and (anchors.diff() > 0).all(), "k distinct patches in raster order"
        scattered = torch.randperm(NUM_PATCHES, generator=generator)[:k]
        assert neighbour_share(anchors) > 0.8 > neighbour_share(scattered) + 0.15, k


def test_foreground_first_views_hold_objects_before_background():
    from rclib.shapes.shortening import foreground_first

    generator = torch.Generator().manual_seed(0)
    foreground = torch.zeros(NUM_PATCHES, dtype=torch.bool)
    foreground[torch.randperm(NUM_PATCHES, generator=generator)[:90]] = True  # 90 object patches, 16%
    shares = []
    for k in (8, 32, 64, 300):
        for _ in range(20):
            anchors = foreground_first(foreground, k, generator)
            assert len(anchors) == k and (anchors.diff() > 0).all(), "k distinct patches in raster order"
            shares.append(float(foreground[anchors].float().mean()))
            if k == 300:
                assert foreground[anchors].sum() >= 60, "a large view holds most objects"
    assert min(shares[:20]) > 0.5 and sum(s == 1.0 for s in shares[:60]) > 20, "small views: objects, little else"


def test_questions_whose_evidence_the_shortened_image_lost_get_no_target(setup):
    from rclib.shapes.data import shorten, without_lost_evidence

    _, _, bank, layout = setup
    rows = [0, 1, 2, 3, 4]  # one scene's questions, every family
    conv = conversation_batch(layout, bank, [rows, rows])
    named = conv.named[0].flatten(0, 1).any(0)  # (P,) every named patch of the scene's questions
    keep_all = torch.nonzero(named).flatten()
    keep_none = torch.nonzero(~named).flatten()[:40]
    weights = torch.zeros(2, max(len(keep_all), 40), NUM_PATCHES)
    weights[0, torch.arange(len(keep_all)), keep_all] = 1  # row 0 keeps every named patch
    weights[1, torch.arange(40), keep_none] = 1  # row 1 keeps none of them
    lost = without_lost_evidence(conv, shorten(conv, weights))
    has_object = conv.named[1].any(-1).any(-1)  # (T,) questions naming an object in the scene
    scored = lost.targets[:, 0::2] != -100
    assert scored[0].all() or (conv.family[0] == FAMILIES.index("glyph")).any()
    assert torch.equal(scored[1], ~has_object), "row 1: only questions about absent objects keep their answer"
    assert (lost.name_pos[1][has_object] == -1).all() and (lost.object_words[1][has_object] == -1).all()
