"""Checkpoints and encoders: load a model of any family by name, encode images and questions, generate from K tokens.

Importing this package does not import transformers or open_clip; :func:`load` does.
"""
from rclib.models.compressed import CompressedModel
from rclib.models.batch import Run, Encoded
from rclib.models.prompts import build_prompt
from rclib.images import read_image
from rclib.models.loading import CheckpointNotFound, load, load_text_tower
from rclib.models.registry import MODELS, TEXT_TOWERS, ModelSpec, TextTowerSpec
from rclib.models.text import SYSTEM_PROMPT, OpenClipTextTower, TextOptions, TextTower, TransformersTextTower
from rclib.models.vision import VisionOutput, cls_attention, encode_vision

__all__ = ["CompressedModel", "Encoded", "Run", "build_prompt", "read_image", "CheckpointNotFound",
           "load", "load_text_tower", "MODELS", "TEXT_TOWERS", "ModelSpec", "TextTowerSpec", "SYSTEM_PROMPT",
           "OpenClipTextTower", "TextOptions", "TextTower", "TransformersTextTower", "VisionOutput", "cls_attention",
           "encode_vision"]
