"""Questions: refused with the reason when they cannot be asked as given; what the text tower cuts off is reported.

- :func:`check_question_text` needs no model (the CLI runs it before loading one): a question must be
  text, valid UTF-8, without control characters, and not empty or only whitespace and invisible characters.
- :func:`check_question_files` needs only a local checkpoint's files (the CLI runs it before loading): the special
  tokens its tokenizer files list, the role words of LLaVA-1.5's prompt, and a question longer than the LLM's
  whole context, refused in a second instead of after the model loads.
- :func:`check_questions` needs the loaded model: every question of a batch (``CompressedModel.encode``'s) through
  :func:`check_question_text` and the chat-marker check below, the error naming ``questions[i]``.
- :func:`check_question` needs the loaded model: the prompt (with the N image tokens and room for the
  answer) must fit the LLM's context, and the question must not contain the markers of the chat format
  the prompt is built with (special tokens such as ``<image>`` or ``</s>``, role words such as
  ``ASSISTANT:``), which would end the user's turn and steer the answer. It returns a
  :class:`QuestionReport`, whose ``text_truncated`` says whether the CLIP text tower (77 tokens for
  OpenAI's CLIP) saw only the start of the question.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

SLOT = "RCLIBQUESTIONSLOT"  # stands in for the question when the prompt template is rendered
ROLE_MARKER = re.compile(r"\b([A-Za-z][A-Za-z_]*)\s*:")  # "USER:", "ASSISTANT:", "### Human:" in a template
ALLOWED_CONTROL = "\n\t\r"
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"}  # controls, zero-width / format, spaces, lone marks
ANSWER_TOKENS = 32  # tokens kept for the answer when a question's length is checked (rclib answer's default)
FILLERS = set("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5")  # blank letters: Hangul fillers, braille blank, Khmer


@dataclass
class QuestionReport:
    """How a question fits the model; ``asdict`` of it goes into result.json."""

    llm_tokens: int  # tokens of the whole prompt the LLM reads: template, question, N image tokens
    llm_limit: int  # of the LLM's context (max_position_embeddings), what the prompt may use: minus the answer
    text_tokens: int  # tokens of the question for the CLIP text tower, start and end tokens included
    text_context: int  # tokens the text tower reads (its context length)
    text_truncated: bool  # True: the text score was computed from the first text_context tokens only

    def record(self) -> dict:
        return asdict(self)


def check_question_text(question) -> str:
    """The question, unchanged, if it is non-empty valid text; else a ValueError saying what is wrong."""
    if not isinstance(question, str):
        raise ValueError(f"the question must be text, got {type(question).__name__}")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as error:  # bytes that were not UTF-8, decoded with surrogateescape (sys.argv)
        raise ValueError(f"the question is not valid UTF-8 (at character {error.start}): pass it as UTF-8 text")\
            from None
    control = sorted({c for c in question if unicodedata.category(c) == "Cc" and c not in ALLOWED_CONTROL})
    if control:
        raise ValueError(f"the question contains control characters {', '.join(map(repr, control))}: remove them")
    if not any(visible(c) for c in question):  # "", spaces, zero-width spaces, joiners, BOM, Hangul fillers...
        raise ValueError("the question is empty: ask something about the image (it holds nothing visible)")
    return question


def visible(character: str) -> bool:
    """False for what shows nothing on its own: whitespace, zero-width and format characters, combining marks
    without a base, and the blank letters (Hangul fillers, the braille blank)."""
    return unicodedata.category(character) not in INVISIBLE_CATEGORIES and character not in FILLERS


def check_questions(model, questions) -> list[str]:
    """The questions of a batch for a loaded :class:`~rclib.models.CompressedModel`, as a list, each checked by
    :func:`check_question_text` and for the markers of the model's chat format; a ValueError names
    ``questions[i]`` and the fix. A single string is a batch of one. (The context-length check of
    :func:`check_question` needs the answer length, which ``encode`` does not know.)"""
    from rclib.models.prompts import build_prompt

    if isinstance(questions, str):
        questions = [questions]
    if not isinstance(questions, (list, tuple)):
        raise ValueError(f"questions must be a list of strings, one per image, got {type(questions).__name__}: "
                         "pass [question] for one")
    if not questions:
        raise ValueError("no questions: pass at least one image and one question about it")
    specials, roles = chat_markers(model.processor.tokenizer,
                                   build_prompt(model.processor, SLOT, model.prompt_format))
    for i, question in enumerate(questions):
        try:
            check_question_text(question)
            check_markers(question, specials, roles)
        except ValueError as error:
            raise ValueError(f"questions[{i}]: {error}") from error
    return list(questions)


def chat_markers(tokenizer, template: str) -> tuple[list[str], list[str]]:
    """(special tokens, role words) of a chat format: the tokenizer's special and added tokens, and the
    words followed by a colon in ``template`` (the prompt rendered with SLOT as the question)."""
    specials = sorted({*tokenizer.all_special_tokens, *(t.content for t in tokenizer.added_tokens_decoder.values())},
                      key=len, reverse=True)
    return specials, role_words(template, specials)


def role_words(template: str, specials: list[str]) -> list[str]:
    """The words followed by a colon in a prompt ``template`` rendered with SLOT as the question, special tokens
    left out: the turn markers a question must not hold."""
    frame = template.replace(SLOT, " ")
    for token in specials:
        frame = frame.replace(token, " ")
    return sorted(set(ROLE_MARKER.findall(frame)))


def check_markers(question: str, specials: list[str], roles: list[str]) -> None:
    """Raise a ValueError if ``question`` holds a special token or a role word followed by a colon."""
    for token in specials:
        if token and token in question:
            raise ValueError(f"the question contains {token!r}, a special token of the model's prompt format; it "
                             "would be read as part of the prompt, not as text: remove it")
    for role in roles:
        found = re.search(rf"\b{re.escape(role)}\s*:", question, flags=re.IGNORECASE)
        if found:
            raise ValueError(f"the question contains {found.group()!r}, the marker of a turn in the model's chat "
                             "format; it would start a new turn and steer the answer: rephrase without it")


def check_question_files(folder: Path, question: str, prompt_format: str, max_new_tokens: int = ANSWER_TOKENS) -> None:
    """Before any model loads: raise the ValueError :func:`check_question` would, where a local checkpoint folder's
    files alone show the fault: a token its tokenizer files add (``<image>``, ``</s>``), a role word of its prompt
    (vicuna_v1, or the chat template the folder holds), or a question that alone fills the LLM's context. The
    loaded model checks the rest (the whole prompt with the image's tokens)."""
    from rclib.models.loading import read_json, read_json_if_any
    from rclib.models.prompts import vicuna_v1_prompt

    added = []
    for name, key in (("tokenizer.json", "added_tokens"), ("tokenizer_config.json", "added_tokens_decoder")):
        entries = read_json_if_any(folder / name).get(key) or []
        if entries:
            added += [entry["content"] for entry in (entries.values() if isinstance(entries, dict) else entries)]
    specials = sorted(set(added), key=len, reverse=True)
    template = vicuna_v1_prompt("", SLOT) if prompt_format == "vicuna_v1" else rendered_chat_template(folder)
    check_markers(question, specials, role_words(template, specials) if template else [])
    if not (folder / "tokenizer.json").is_file() or not (folder / "config.json").is_file():
        return
    from tokenizers import Tokenizer  # the Rust tokenizer alone: no torch, no transformers

    config = read_json(folder / "config.json")
    context = (config.get("text_config") or {}).get("max_position_embeddings") or config.get("max_position_embeddings")
    tokens = len(Tokenizer.from_file(str(folder / "tokenizer.json")).encode(question, add_special_tokens=False).ids)
    if context and tokens > context - max_new_tokens:
        raise ValueError(f"the question is too long: it alone takes {tokens} tokens but the LLM reads {context}, "
                         f"{max_new_tokens} of them kept for the answer, and the image's tokens besides: shorten "
                         f"the question by {tokens - context + max_new_tokens} tokens or more")


def rendered_chat_template(folder: Path) -> str | None:
    """The chat template of a checkpoint folder rendered for one user turn (an image, then SLOT) and the reply's
    start, as transformers renders it (a sandboxed Jinja environment); None without a template or if it does not
    render outside transformers (the loaded model's check then finds its role words)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from rclib.models.loading import read_json_if_any

    path = folder / "chat_template.jinja"
    source = path.read_text(encoding="utf-8") if path.is_file() else (
        read_json_if_any(folder / "chat_template.json").get("chat_template")
        or read_json_if_any(folder / "tokenizer_config.json").get("chat_template"))
    if not isinstance(source, str):
        return None
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": SLOT}]}]
    try:
        template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(source)
        return template.render(messages=messages, add_generation_prompt=True)
    except (TemplateError, TypeError, ValueError):
        return None


def text_token_count(tower, text: str) -> int:
    """Tokens ``text`` has for a text tower (CLIP, SigLIP), start and end tokens included, before any truncation."""
    from rclib.models.text import OpenClipTextTower

    if not isinstance(tower, OpenClipTextTower):  # a transformers tokenizer adds its own start and end
        return len(tower.tokenizer(text)["input_ids"])
    return len(tower.tokenizer.encode(text)) + 2  # open_clip's tokenizer: BPE tokens, plus start and end


def check_question(model, question: str, max_new_tokens: int = 32) -> QuestionReport:
    """Check ``question`` for a loaded :class:`~rclib.models.CompressedModel` answering in up to ``max_new_tokens``
    tokens; raise a ValueError naming the problem (and the limit) or return what the encoders will see."""
    from rclib.models.prompts import build_prompt

    check_question_text(question)
    tokenizer = model.processor.tokenizer
    specials, roles = chat_markers(tokenizer, build_prompt(model.processor, SLOT, model.prompt_format))
    check_markers(question, specials, roles)

    config = model.model.config
    n_image = model.family.most_image_tokens(config, model.processor.image_processor)
    ids = tokenizer(build_prompt(model.processor, question, model.prompt_format))["input_ids"]
    llm_tokens = len(ids) - ids.count(config.image_token_id) + n_image  # one placeholder becomes N image tokens
    context = config.text_config.max_position_embeddings
    llm_limit = context - max_new_tokens
    if llm_tokens > llm_limit:
        raise ValueError(f"the question is too long: the prompt would take {llm_tokens} tokens ({n_image} of them the "
                         f"image's) but the LLM reads {context}, {max_new_tokens} of them kept for the answer, so at "
                         f"most {llm_limit}: shorten the question by {llm_tokens - llm_limit} tokens or more")
    if model.text_tower is None:  # the text score reads the question through the LLM, which has room for it
        return QuestionReport(llm_tokens, llm_limit, 0, 0, False)
    text_tokens = text_token_count(model.text_tower, question)
    text_context = model.text_tower.context_length
    return QuestionReport(llm_tokens, llm_limit, text_tokens, text_context, text_tokens > text_context)
