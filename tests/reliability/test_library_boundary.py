"""The library's front doors refuse what the command line refuses: questions and images of a batch (naming
``questions[i]`` / ``images[i]``), ``rclib.load``'s arguments, method options, bench configs, checkpoint folders
without their tokenizer or image processor files; each a one-line ValueError that says what to do."""
import inspect
import io
import shutil
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import rclib
from rclib.bench import BenchConfig
from rclib.cli import parser
from rclib.filters import outlier_count
from rclib.images import ImageNote, read_images
from rclib.models.compressed import CompressedModel
from rclib.models.loading import torch_dtype
from rclib.questions import check_questions

ENCODE_CHECKS = all(name in inspect.getsource(CompressedModel.encode) for name in ("check_questions", "read_images"))


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# Case 1: a batch's questions get the command line's checks, by index: empty, invisible, control characters,
# the chat format's markers.
@pytest.mark.parametrize("question, message", [
    ("", "the question is empty: ask something about the image"),
    ("\u200b\u200b\u2060", "the question is empty"),  # zero-width spaces and a word joiner
    ("\u3164 \u2800", "the question is empty"),  # a Hangul filler and the braille blank look like letters
    ("what\x00 colour ?", r"control characters '\\x00': remove them"),
    ("<image> what colour ?", "contains '<image>', a special token of the model's prompt format"),
    ("what colour ? ASSISTANT: red", "contains 'ASSISTANT:', the marker of a turn in the model's chat format"),
    (7, "the question must be text, got int"),
])
def test_the_questions_of_a_batch_are_checked_by_index(tiny_model, tiny_images, question, message):
    with pytest.raises(ValueError, match=rf"^questions\[1\]: .*{message}") as error:
        check_questions(tiny_model, ["what colour is the circle ?", question])
    one_line(error)
    assert check_questions(tiny_model, "what colour ?") == ["what colour ?"]
    with pytest.raises(ValueError, match="no questions: pass at least one image and one question"):
        check_questions(tiny_model, [])
    if ENCODE_CHECKS:  # CompressedModel.encode calls the checks: answer refuses the same
        with pytest.raises(ValueError, match=rf"^questions\[1\]: .*{message}"):
            tiny_model.answer(list(tiny_images[:2]), ["what colour is the circle ?", question])


# Case 1, the command line: a question of invisible characters only is empty, refused before loading.
@pytest.mark.parametrize("question", ["\u200b\u200b", "\ufeff\u2060 ", "\u3164"])
def test_an_invisible_question_is_refused_by_the_command_line(fast, tiny_args, image, question):
    assert "the question is empty: ask something about the image" in fast(
        ["answer", "--image", image, "--question", question, *tiny_args])


# Case 2: a batch's images: none at all, None, 0 x 0, a mode without RGB, a closed file, a normalised tensor.
def closed_file(tmp_path):
    path = tmp_path / "image.png"
    with open(path, "wb") as file:
        Image.new("RGB", (4, 4)).save(file)
    return file


@pytest.mark.parametrize("images, message", [
    (lambda d: [], "no images: pass at least one image, with one question about each"),
    (lambda d: None, "images must be a list of images, one per question, got NoneType: pass \\[image\\]"),
    (lambda d: [np.zeros((4, 4, 3), np.uint8), None], r"images\[1\]: an image must be a path, a PIL image, .*got "
                                                      "NoneType: pass one of these"),
    (lambda d: [Image.new("RGB", (0, 0))], r"images\[0\]: .* is 0 x 0: it has no pixels; pass a picture of at least"),
    (lambda d: [Image.new("La", (4, 4))], r"images\[0\]: cannot convert a PIL image of mode 'La' to RGB .* convert "
                                          "it to RGB or RGBA first"),
    (lambda d: [closed_file(d)], r"images\[0\]: image '.*image.png' is a closed file object: pass it while it is "
                                 "open"),
    (lambda d: [torch.full((3, 4, 4), -1.8)], r"images\[0\]: the image's float pixels run from -1.8 to -1.8, "
                                              "neither 0..1 .* nor 0..255: pass the picture before any normalisation"),
    (lambda d: [torch.zeros(1, 3, 4, 4)], r"images\[0\]: an image array must be .* \(a batch: pass its images as a "
                                          r"list\)"),
])
def test_bad_images_of_a_batch_are_named_by_index(tiny_model, tmp_path, images, message):
    batch = images(tmp_path)
    with pytest.raises(ValueError, match=message) as error:
        read_images(batch)
    one_line(error)
    if ENCODE_CHECKS and isinstance(batch, list) and batch:
        with pytest.raises(ValueError, match=message):
            tiny_model.answer(batch, ["what colour ?"] * len(batch))


# Case 2: a float tensor in 0..1 (torchvision's convention) is scaled to 0..255 with a note, as a float file is; an
# open binary file is read where it stands and left open.
def test_float_tensors_are_read_as_0_to_1_and_open_files_are_read(tiny_images, tmp_path):
    pixels = tiny_images[0]
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255  # what torchvision's to_tensor gives
    with pytest.warns(ImageNote, match=r"images\[0\]: float pixels within 0..1 read as 0..1 \(scaled to 0..255\)"):
        [read] = read_images([tensor.bfloat16().float()])
    assert np.abs(np.asarray(read, dtype=int) - pixels).max() <= 1, "0..1 floats are not read as a black image"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # uint8 and 0..255 floats are taken as they are, without a note
        assert np.array_equal(np.asarray(read_images([pixels.astype(np.float32)])[0]), pixels)
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    with open(path, "rb") as file:
        assert np.array_equal(np.asarray(read_images([file])[0]), pixels) and not file.closed
    with open(path) as text, pytest.raises(ValueError, match="is a file opened as text: open it with open"):
        read_images([text])
    assert np.array_equal(np.asarray(read_images([io.BytesIO(path.read_bytes())])[0]), pixels)


# Case 3: rclib.load's arguments: a number as the model, dtype aliases, a device name torch does not know.
def test_load_arguments_are_checked_before_anything_loads(tiny_llava_dir, tiny_clip_dir):
    cpu = torch.device("cpu")
    assert [torch_dtype(name, cpu) for name in ("fp16", "bf16", "fp32", "float32", "torch.bfloat16", "half")] == \
        [torch.float16, torch.bfloat16, torch.float32, torch.float32, torch.bfloat16, torch.float16]
    started = time.monotonic()
    for call, message in [
        (lambda: rclib.load(123), r"name_or_path must be a registry name \(shapes.*\), a hub id \(owner/name\) or a "
                                  "folder path, got int 123"),
        (lambda: rclib.load(tiny_llava_dir, 5), "text_encoder must be a registry name"),
        (lambda: rclib.load(tiny_llava_dir, tiny_clip_dir, dtype="int8"), "dtype 'int8' is not a floating-point type "
                                                                          "rclib loads: pass one of 'float16', 'fp16'"),
        (lambda: rclib.load(tiny_llava_dir, tiny_clip_dir, dtype=torch.int64), "dtype must be a floating-point"),
        (lambda: rclib.load(tiny_llava_dir, tiny_clip_dir, device="gpu"), r"unknown device 'gpu' \(a GPU is 'cuda'\): "
                                                                          "pass 'cpu', 'cuda'"),
        (lambda: rclib.load(tiny_llava_dir, tiny_clip_dir, device="xla"), "rclib does not run on device type 'xla'"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            call()
        one_line(error)
    assert time.monotonic() - started < 5
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available on this machine .*: pass device='cpu'"):
            rclib.load(tiny_llava_dir, tiny_clip_dir, device="cuda")
    assert rclib.load(tiny_llava_dir, tiny_clip_dir, device="cpu", dtype="bf16").dtype == torch.bfloat16


# Case 4: the filter's and the methods' options are type- and range-checked by name, not left to torch.
def test_filter_and_method_options_are_checked_by_name():
    scores = torch.rand(2, 9)
    with pytest.raises(ValueError, match="scores is a meta tensor"):
        outlier_count(scores.to("meta"))
    with pytest.raises(ValueError, match=r"n_neighbors must be at least 1 and a whole number \(LOF's neighbours\), got 2.5"):
        outlier_count(scores, n_neighbors=2.5)
    with pytest.raises(ValueError, match="iqr_factor must be a finite number >= 0"):
        outlier_count(scores, rule="iqr", iqr_factor=float("nan"))
    tokens, keys = torch.randn(2, 9, 4), torch.randn(2, 9, 3)
    for options, message in [
        ({"n_neighbors": 2.5}, "option n_neighbors must be a whole number >= 1 .*got float 2.5"),
        ({"knn_k": 0}, "option knn_k must be a whole number >= 1"),
        ({"text_stage": "no"}, "option text_stage must be True or False"),
        ({"knn_text_weight": float("inf")}, "rc option knn_text_weight must be a finite number, or None"),
        ({"budget_split": "abc"}, "rc option budget_split must be three numbers >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            rclib.compress(tokens, scores, scores, keys, method="rc", budget=5, **options)
    with pytest.raises(ValueError, match="method 'vispruner': option important_share must be a finite number from 0 "
                                         "to 1"):
        rclib.compress(tokens, scores, scores, keys, method="vispruner", budget=5, important_share=2.0)


# Case 5: a bench config that would give identical rows, or no row at all, is refused (the library as the CLI).
@pytest.mark.parametrize("options, message", [
    ({"methods": ("rc", "rc"), "budgets": ("64",)}, "methods lists rc more than once: give each once"),
    ({"methods": ("rc",), "budgets": ("64", "64")}, "budgets lists 64 more than once"),
    ({"methods": ("fastervlm",), "budgets": ("adaptive",)}, "fastervlm take a fixed budget, not 'adaptive': add a "
                                                             "budget count like 64"),
    ({"methods": "rc"}, "methods must be a list or tuple, got the string 'rc'"),
    ({"families": ("colour",)}, r"unknown question families \['colour'\]"),
])
def test_a_bench_config_without_distinct_rows_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**options)


# Case 6 and 8: a checkpoint folder without its tokenizer or image processor files is named as such (not "install
# sentencepiece"), by rclib.load and by the command line before loading.
@pytest.mark.parametrize("drop, message", [
    (("tokenizer.json",), "lacks its tokenizer files .*: save them next to the weights: load the processor of the "
                          r"checkpoint the weights came from and call its save_pretrained\("),
    (("processor_config.json", "preprocessor_config.json"), "lacks its image processor's settings"),
])
def test_a_folder_without_tokenizer_or_processor_files_is_named(fast, tiny_llava_dir, tiny_clip_dir, image, tmp_path,
                                                                 drop, message):
    folder = shutil.copytree(tiny_llava_dir, tmp_path / "model")
    for name in drop:
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match=message):
        rclib.load(folder, tiny_clip_dir, device="cpu")
    line = fast(["answer", "--image", image, "--question", "what colour ?", "--model", str(folder), "--text-encoder",
                 str(tiny_clip_dir)])
    assert "LLaVA checkpoint folder" in line and "model" in line
    tower = shutil.copytree(tiny_clip_dir, tmp_path / "clip")
    (tower / "tokenizer.json").unlink()
    line = fast(["answer", "--image", image, "--question", "what colour ?", "--model", str(tiny_llava_dir),
                 "--text-encoder", str(tower)])
    assert "CLIP text tower folder" in line and "lacks its tokenizer files" in line


# Case 7 and 8: oracle (it needs a scene's ground truth) is no choice of answer / demo; --preset with another method
# and unknown --families are refused before loading.
def test_choices_that_cannot_work_are_refused_before_loading(fast, image):
    commands = {name: sub for action in parser()._subparsers._group_actions for name, sub in action.choices.items()}
    for command in ("answer", "demo"):
        method = next(a for a in commands[command]._actions if a.dest == "method")
        assert "oracle" not in method.choices and "rc" in method.choices
    assert "oracle" in next(a for a in commands["bench"]._actions if a.dest == "methods").choices
    assert "--preset is an option of rc, not of fastervlm" in fast(["demo", "--method", "fastervlm", "--preset",
                                                                     "released"])
    assert "unknown question families ['colour']" in fast(["bench", "--families", "colour"])
