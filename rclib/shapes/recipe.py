"""The training recipe's settings: every stage's budget, batch, learning rate and loss weights (`TrainConfig`),
the shrink of the CI smoke run (`QUICK`) and the patch count checkpoints are also judged at."""

from __future__ import annotations

from dataclasses import dataclass, field

from rclib.shapes.build import ShapesModelConfig
from rclib.shapes.world import WorldConfig

SELECTION_TOKENS = 64  # checkpoints are also judged with this many uniformly random patches (no method's selection)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # world stream of the training scenes and torch seed
    train_scenes: int = 4000  # precomputed training scenes (encoding costs ~40 ms each on 2 cores)
    questions_per_scene: int = 10  # training questions per scene, families round-robin
    eval_scenes: int = 300  # held-out scenes for the in-training checks, one question each
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ShapesModelConfig = field(default_factory=ShapesModelConfig)
    total_minutes: float = 86.0  # the whole run, final measurement included (the CLIP stages take ~22 min of it)
    measure_minutes: float = 5.0  # reserved at the end for `evaluate.measure`
    clip_minutes: float = 14.0  # stage 1
    clip_steps: int = 100_000  # stage caps in steps (the minutes usually bind first)
    clip_batch: int = 24
    clip_lr: float = 2e-3
    background_weight: float = 0.3  # CE weight of the "none" class of the patch heads (most patches)
    text_minutes: float = 4.0  # stage 2
    text_steps: int = 100_000
    text_batch: int = 64
    text_lr: float = 2e-3
    caption_weight: float = 0.5  # weight of the caption InfoNCE in stage 2
    align_minutes: float = 2.0  # stage 3a
    align_steps: int = 2000  # ~0.5 min: fewer (400) leave the projected patches without their position
    llava_steps: int = 100_000  # stage 3b runs until the total budget's deadline
    llava_batch: int = 8  # conversations (scenes) per step: small batches, more updates per CPU second
    turns: int = 10  # questions per conversation: the 576 image tokens dominate a step's cost, so every
    # scene's questions in one conversation give the most answers per CPU second
    llava_lr: float = 2e-3
    grounding_weight: float = 1.0  # weight of each attention-grounding loss (0 = off)
    grounding_layer: int = 1  # LM layer whose head 0, at a name's last word, is pulled onto the named object
    word_layer: int = 0  # LM layer whose head 0 is pulled onto every object sharing the name's last word and
    # whose head 1 onto the name's first word ("red" of "red circle"), so layer 1 can join the two
    answer_layer: int = 2  # LM layer whose head k, at the answer position, is pulled onto the k-th name's last word
    # (k = 0, 1) and whose head 2 onto a position question's relation word
    option_layer: int = 3  # LM layer whose head 0, at the answer position, is pulled onto the chosen option word
    # and whose head 1 (the verdict) onto a position question's relation word when it holds, else onto itself;
    # the word layer's head 2 pulls each option word of a choice question onto its letter, the grounding
    # layer's head 1 a name's last word onto that object's digit patches. The chosen-option pull sits after the
    # answer layer, which first puts the asked object's colour at the answer position (data/models/README.md,
    # "What did not work")
    lens_weight: float = 1.0  # logit-lens loss on the value path: lm_head on the hidden state at a name's last word
    # after the grounding layer, and at the answer position after the answer layer, must score the named
    # object's colour, shape and digit (all three: a lens on the digit alone crowds the colour and shape out of
    # the name's position), and more words where the answer needs them: see lens_loss
    shorten_share: float = 0.5  # share of training conversations whose image the LM reads shortened (`random_shortening`):
    # method-neutral, so the LM reads any order-preserving subset or merge of the patches as LLaVA's LM reads a
    # compressed image, without favouring any method's selection
    shorten_min_tokens: int = 8  # smallest random budget; budgets are log-uniform in [shorten_min_tokens, P]
    cluster_share: float = 0.35  # share of the shortened images whose kept patches are a few random blobs
    # (`clustered_anchors`: the top of a smooth random field) instead of uniformly random patches: selections in the
    # field keep whole regions
    foreground_share: float = 0.35  # share of the shortened images that keep the scene's object patches first
    # (`foreground_first`, from the scene's patch labels): an LM trained only on views as full of background as the
    # image answers "yes" to "is there a red circle?" when it sees a whole red square, a whole blue circle and little
    # background (data/models/README.md); the rest of the shortened images keep uniformly random patches
    merge_share: float = 0.5  # share of the shortened images whose left-out patches join random groups (means) instead of
    # being dropped
    weighted_share: float = 0.5  # share of the merged images whose tokens are weighted sums of their groups (random
    # Dirichlet weights, total mass log-uniform in merge_mass) instead of means: the field's merges emit both (an
    # attention-weighted sum of the left-out tokens weighs ~0.01-0.6 of a patch, a centre plus its neighbours up to ~2)
    merge_mass: tuple[float, float] = (0.01, 2.0)  # range of a weighted-sum token's total weight
    llava_from: str | None = None  # a saved LLaVA folder (a run's shapes-llava or checkpoints/llava-best): stage 3b
    # continues from it (stage 3a skipped); needs clip_from, the CLIP its vision tower was tied to
    clip_from: str | None = None  # a saved CLIPModel folder: skip stages 1-2 and start from it
    warmup_share: float = 0.05  # linear warmup share of every stage, then cosine decay to 0
    eval_every: int = 150  # LLaVA steps between held-out checks and checkpoints


QUICK = dict(
    train_scenes=48, questions_per_scene=4, eval_scenes=20, total_minutes=5.0, measure_minutes=1.0,
    clip_steps=3, clip_batch=8, text_steps=3, text_batch=8, align_steps=2, llava_steps=3, llava_batch=4, turns=2,
    eval_every=2,
)  # CI smoke run: every stage, every file, well under a minute
