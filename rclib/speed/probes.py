"""What one end-to-end pass of ``rclib speed`` measures: hooks on the vision tower, a clock on the generated
tokens, the compression and the LLM of one method, and both ways of doing RC's work after the vision forward."""
from __future__ import annotations

from collections.abc import Callable

import torch

from rclib.methods import METHODS, compress
from rclib.models.compressed import CompressedModel
from rclib.models.text import text_similarity
from rclib.models.vision import cls_attention
from rclib.speed.instrument import Stopwatch


class VisionProbe:
    """Hooks on the vision tower during an encode: its time, its final tokens, the last layer's q and k."""

    def __init__(self, model: CompressedModel, watch: Stopwatch):
        self.tower = model.model.model.vision_tower
        self.watch = watch
        self.seconds = 0.0
        self.caught: dict[str, torch.Tensor] = {}

    def __enter__(self) -> VisionProbe:
        attention = self.tower.encoder.layers[-1].self_attn

        def start(module, args):
            self.started = self.watch.read()

        def stop(module, args, out):
            self.seconds = self.watch.read() - self.started
            self.caught["last_hidden_state"] = out.last_hidden_state

        self.hooks = [self.tower.register_forward_pre_hook(start), self.tower.register_forward_hook(stop),
                      attention.q_proj.register_forward_hook(lambda m, a, out: self.caught.__setitem__("q", out)),
                      attention.k_proj.register_forward_hook(lambda m, a, out: self.caught.__setitem__("k", out))]
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


class TokenClock:
    """A generation streamer that notes when the prompt went in and when each new token came out (the
    tokens reach it on the host, so the device has finished them)."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.times: list[float] = []

    def put(self, value):  # transformers calls this with the prompt first, then with each new token
        self.times.append(self.clock())

    def end(self):
        pass


def generate_timed(model: CompressedModel, encoded, result, new_tokens: int, watch: Stopwatch) -> dict:
    """Splice + greedy generation of exactly ``new_tokens`` tokens, with the prefill and decode split."""
    tokens = TokenClock(watch.clock)
    ids, seconds = watch(model.generate_ids, encoded, result, new_tokens, streamer=tokens)
    assert ids.shape[1] == new_tokens and len(tokens.times) == new_tokens + 1, "generation did not run its length"
    prompt, first, last = tokens.times[0], tokens.times[1], tokens.times[-1]
    return {"prefill_s": first - prompt, "decode_s": last - first, "generate_s": seconds,
            "decode_tokens_per_s": len(encoded) * (new_tokens - 1) / max(last - first, 1e-9)}


def encode_probed(model: CompressedModel, images, questions, watch: Stopwatch) -> tuple:
    """(encoded, its seconds, the vision tower's share of them, what the probe caught)."""
    with VisionProbe(model, watch) as probe:
        encoded, seconds = watch(model.encode, images, questions)
    return encoded, seconds, probe.seconds, probe.caught


def rclib_rc_work(model: CompressedModel, encoded, caught: dict, text_embed: torch.Tensor):
    """rclib's share of RC's work after the one vision forward, configured as the released code
    (``preset="released"``: no post-layernorm before the projection, its stage counts and quirks): text
    score, [CLS] attention, compression."""
    patch_embeds = model.text_tower.project_patches(caught["last_hidden_state"], post_layernorm=False)
    text_sim = text_similarity(text_embed, patch_embeds).to(model.device)
    cls_attn = cls_attention(caught["q"], caught["k"])
    return compress(encoded.features, cls_attn, text_sim, encoded.keys, method="rc", preset="released",
                    text_dim=model.text_tower.projection_dim)


def released_second_forward(model: CompressedModel, encoded) -> torch.Tensor:
    """The released code's text side of the image: a second vision forward, its final patch tokens through
    the visual projection without post-layernorm -> [1, N, D]."""
    second = model.model.model.vision_tower(encoded.pixel_values).last_hidden_state  # [1, 1 + N, C]
    return model.text_tower.project_vision(second[:, 1:])


def llm_run(model: CompressedModel, encoded, method: str, new_tokens: int, watch: Stopwatch) -> dict:
    """One method on an encoded batch: the image tokens the last LLM layer reads, the compression's and the
    LLM's seconds.

    Before-LLM methods: ``model.compress`` then :func:`generate_timed`. Inside-LLM methods prune while
    generating (``model.generate_inside``): the prefill is timed as a one-token generation, the decode as
    the rest of a full one.
    """
    if METHODS[method].placement == "before_llm":
        result, seconds = watch(model.compress, encoded, method)
        return {"tokens": int(result.n_output.max()), "compress_s": seconds,
                **generate_timed(model, encoded, result, new_tokens, watch)}
    _, prefill = watch(model.generate_inside, encoded, method, None, 1)
    (result, ids, _), generate = watch(model.generate_inside, encoded, method, None, new_tokens)
    assert ids.shape[1] == new_tokens, "generation stopped early: the benchmark model has no EOS"
    decode = max(generate - prefill, 1e-9)
    return {"tokens": int(result.n_output.max()), "compress_s": 0.0, "prefill_s": prefill, "decode_s": decode,
            "generate_s": generate, "decode_tokens_per_s": len(encoded) * (new_tokens - 1) / decode}
