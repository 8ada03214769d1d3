"""The prompt and the image as a checkpoint's processor should receive them: LLaVA-1.5's evaluation prompt or the
checkpoint's chat template, the processor's crop or LLaVA-1.5's pad-to-square; and the processor's pixels
undone, for figures."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from rclib.images import read_image
from rclib.models.text import SYSTEM_PROMPT


PROMPT_FORMATS = ("vicuna_v1", "chat_template")
IMAGE_PREPROCESS = ("pad", "crop")


def build_prompt(processor, question: str, prompt_format: str = "chat_template") -> str:
    """The LLM prompt for one image and the question.

    "vicuna_v1": LLaVA-1.5's evaluation prompt, its system prompt then " USER: <image>\n{question}
    ASSISTANT:". "chat_template": the checkpoint's chat template (llava-hf's has no system prompt); a
    processor without one gets LLaVA-1.5's plain "USER: <image>\n{question} ASSISTANT:".
    """
    if prompt_format == "vicuna_v1":
        return vicuna_v1_prompt(processor.image_token, question)
    if processor.chat_template:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return f"USER: {processor.image_token}\n{question} ASSISTANT:"


def vicuna_v1_prompt(image_token: str, question: str) -> str:
    """LLaVA-1.5's evaluation prompt: its system prompt, then " USER: <image>\n{question} ASSISTANT:"."""
    return f"{SYSTEM_PROMPT} USER: {image_token}\n{question} ASSISTANT:"


def check_input_format(image_preprocess: str | None, prompt_format: str | None) -> None:
    """Raise a ValueError naming the choices for an unknown image preprocessing or prompt format (None passes)."""
    if image_preprocess not in (None, *IMAGE_PREPROCESS):
        raise ValueError(f"image_preprocess must be one of {IMAGE_PREPROCESS}, got {image_preprocess!r}")
    if prompt_format not in (None, *PROMPT_FORMATS):
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")


def pad_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """LLaVA-1.5's expand2square: the image centred on a square of colour ``fill``, its longer side long."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def mean_colour(image_processor) -> tuple[int, ...]:
    """The processor's mean pixel as LLaVA-1.5 pads with it: int(mean * 255) per channel."""
    return tuple(int(x * 255) for x in image_processor.image_mean)


def preprocess_image(image, image_preprocess: str, image_processor):
    """An image as the processor should receive it: "pad" pads it to a square in the processor's mean
    colour first (LLaVA-1.5's image_aspect_ratio="pad"), "crop" leaves it to the processor, whose centre
    crop cuts the sides of a non-square image. A path is read first; arrays and tensors become PIL images."""
    image = read_image(image)
    if image_preprocess == "crop":
        return image
    from transformers.image_transforms import to_pil_image

    pil = image if isinstance(image, Image.Image) else to_pil_image(image)
    return pad_to_square(pil.convert("RGB"), mean_colour(image_processor))


def display_pixels(image_processor, pixels: torch.Tensor) -> np.ndarray:
    """The processor's pixels [..., 3, H, W] as uint8 [..., H, W, 3]: its normalisation and rescale undone."""
    pixels = pixels.float().cpu().movedim(-3, -1)  # [..., 3, H, W] -> [..., H, W, 3]
    if image_processor.do_normalize:
        pixels = pixels * torch.tensor(image_processor.image_std) + torch.tensor(image_processor.image_mean)
    if image_processor.do_rescale:
        pixels = pixels / image_processor.rescale_factor
    return pixels.round().clamp(0, 255).to(torch.uint8).numpy()
