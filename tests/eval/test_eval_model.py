"""The lmms-eval model ``rclib`` in-process on the tiny models: registration, model_args, batched answers with
their visual tokens, the per-batch cache, and the clear errors."""
from __future__ import annotations

import tomllib

import pytest
from lmms_eval.api.instance import Instance
from PIL import Image

from rclib.eval.model import RclibModel, cut_at_stop, greedy_length


@pytest.fixture(scope="module")
def tiny_args(tiny_llava_dir, tiny_clip_dir) -> dict:
    return {"pretrained": str(tiny_llava_dir), "text_encoder": str(tiny_clip_dir), "device": "cpu", "dtype": "float32"}


@pytest.fixture(scope="module")
def tiny_lmm(tiny_args) -> RclibModel:
    return RclibModel(**tiny_args, method="rc", budget=8, batch_size=2)


def requests(images, task: str = "t", gen_kwargs: dict | None = None) -> tuple[list[Instance], dict]:
    """generate_until requests, one per image, and the task_dict lmms-eval would set."""
    docs = [{"image": Image.fromarray(image)} for image in images]
    gen_kwargs = gen_kwargs or {"max_new_tokens": 3, "temperature": 0, "until": ["ASSISTANT:"]}
    made = [Instance("generate_until", (f"what colour is the circle {'?' * (i % 3 + 1)}", dict(gen_kwargs),
                                        lambda doc: [doc["image"]], i, task, "test"), 0,
                     {"task": task, "doc_id": i, "repeats": 1}) for i in range(len(docs))]
    return made, {task: {"test": docs}}


def test_pyproject_registers_the_model_for_lmms_eval():
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    from rclib.eval import manifest

    pyproject = tomllib.loads(open("pyproject.toml").read())
    assert pyproject["project"]["entry-points"]["lmms_eval.models"] == {"rclib": "rclib.eval:manifest"}
    assert any(r.startswith("lmms-eval>=0.7.3") for r in pyproject["project"]["optional-dependencies"]["eval"])
    registry = ModelRegistryV2()
    registry.register_manifest(manifest())
    assert registry.get_model_class("rclib") is RclibModel


def test_unknown_model_arg_names_the_valid_ones(tiny_args):
    with pytest.raises(ValueError) as error:
        RclibModel(**tiny_args, method="rc", n_neighbours=5)
    message = str(error.value)
    for name in ("n_neighbours", "n_neighbors", "knn_k", "image_preprocess", "text_pooling", "budget", "cache"):
        assert name in message


def test_options_go_where_they_belong(tiny_args):
    lmm = RclibModel(**tiny_args, method="rc", preset="released", n_neighbors=10, post_layernorm=False,
                     prompt_format="vicuna_v1", budget_split="[0.6,0.2,0.2]")  # as lmms-eval parses model_args
    assert lmm.text_options == {"preset": "released", "post_layernorm": False}
    assert lmm.method_options == {"preset": "released", "n_neighbors": 10, "budget_split": (0.6, 0.2, 0.2)}
    assert lmm.model.prompt_format == "vicuna_v1"


@pytest.mark.parametrize("bad, says", [({"method": "oracle"}, "ground-truth"), ({"method": "rcc"}, "unknown method"),
                                       ({"budget": "lots"}, "budget"), ({"rule": "median"}, "rule")])
def test_bad_model_args_fail_at_start(tiny_args, bad, says):
    with pytest.raises(ValueError, match=says):
        RclibModel(**tiny_args, **{"method": "rc", **bad})


def test_greedy_decoding_only():
    assert greedy_length({"max_new_tokens": 16, "temperature": 0, "do_sample": False, "num_beams": 1}, "t") == 16
    assert greedy_length({"until": ["ASSISTANT:"]}, "t") == 1024
    for sampling in ({"do_sample": True}, {"temperature": 0.2}, {"num_beams": 4}):
        with pytest.raises(ValueError, match="greedily"):
            greedy_length(sampling, "mme")


def test_answers_stop_at_the_first_stop_string():
    assert cut_at_stop("yes ASSISTANT: no", ["ASSISTANT:"]) == "yes "
    assert cut_at_stop("red.\n\nblue", "\n\n") == "red."
    assert cut_at_stop("red", None) == "red"


def test_generate_until_answers_each_request_and_records_its_tokens(tiny_lmm, tiny_images):
    made, tiny_lmm.task_dict = requests(tiny_images[:5])
    tiny_lmm.visual_tokens.clear()
    answers = tiny_lmm.generate_until(made)
    encoded = tiny_lmm.model.encode([Image.fromarray(i) for i in tiny_images[:5]], [r.args[0] for r in made])
    run = tiny_lmm.model.run(encoded, "rc", 8, 3)
    assert answers == [cut_at_stop(text, ["ASSISTANT:"]) for text in run.texts]  # batches of 2, in request order
    assert sorted(tiny_lmm.visual_tokens["t"]) == sorted(run.result.n_output.tolist())


def test_cached_batches_are_not_answered_again(tiny_args, tiny_images, tmp_path, monkeypatch):
    lmm = RclibModel(**tiny_args, method="rc", batch_size=2, cache=str(tmp_path))
    made, lmm.task_dict = requests(tiny_images[:4])
    first = lmm.generate_until(made[:3])  # an interrupted run: three of four answered
    first_tokens = list(lmm.visual_tokens["t"])
    computed = []
    answer_batch = lmm.answer_batch
    monkeypatch.setattr(lmm, "answer_batch", lambda batch: computed.append((batch, answer_batch(batch))) or computed[-1][1])
    again = lmm.generate_until(made)
    assert [[r.args[3] for r in batch] for batch, _ in computed] == [[3]]  # only the new request reaches the model
    assert again[:3] == first
    new_k = computed[0][1][0][1]
    assert sorted(lmm.visual_tokens["t"][len(first_tokens):]) == sorted(first_tokens + [new_k])  # cached K kept


def test_loglikelihood_names_the_task(tiny_lmm):
    made = [Instance("loglikelihood", ("context", " A"), 0, {"task": "seedbench_ppl", "doc_id": 0, "repeats": 1})]
    with pytest.raises(ValueError, match="seedbench_ppl"):
        tiny_lmm.loglikelihood(made)


def test_a_question_needs_exactly_one_image(tiny_lmm, tiny_images):
    made, tiny_lmm.task_dict = requests(tiny_images[:1])
    tiny_lmm.task_dict["t"]["test"][0]["image"] = None
    made[0].arguments = (made[0].args[0], made[0].args[1], lambda doc: [], 0, "t", "test")
    with pytest.raises(ValueError, match="exactly one image"):
        tiny_lmm.generate_until(made)


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision", "qwen2_5_vl"])
def test_the_new_families_answer_through_lmms_eval(family, tiled_images, request):
    """LLaVA-NeXT, LLaVA-OneVision and Qwen2.5-VL checkpoints load as lmms-eval's rclib model and answer batches of
    images of different sizes as one by one."""
    folder, text_encoder = {"llava_next": ("tiny_next_dir", "tiny_clip_dir"),
                            "llava_onevision": ("tiny_onevision_dir", "tiny_siglip_dir"),
                            "qwen2_5_vl": ("tiny_qwen_dir", None)}[family]
    args = {"pretrained": str(request.getfixturevalue(folder)), "device": "cpu", "dtype": "float32",
            **({"text_encoder": str(request.getfixturevalue(text_encoder))} if text_encoder else {})}
    lmm = RclibModel(**args, method="rc", budget=12, batch_size=3)
    made, lmm.task_dict = requests(tiled_images)
    answers = lmm.generate_until(made)
    singles = [lmm.model.run(lmm.model.encode([Image.fromarray(image)], [r.args[0]]), "rc", 12, 3).texts[0]
               for image, r in zip(tiled_images, made)]
    assert answers == [cut_at_stop(text, ["ASSISTANT:"]) for text in singles]
