"""ShapesWorld: a synthetic VQA world at LLaVA-1.5's geometry and the small CLIP + LLaVA rclib trains on it.

- `rclib.shapes.world`: scenes, masks and question families (numpy only), imported here.
- `rclib.shapes.metrics`: `family_metrics`, the one scoring of answers per family.
- `rclib.shapes.tokenizer`, `rclib.shapes.build`: the world tokenizer and the model configs.
- `rclib.shapes.train`: `train(out_dir, quick=False)` reproduces `data/models/`.
- `rclib.shapes.evaluate`: the trained model measured through `rclib.models.load` and `rclib.methods`.
"""

from rclib.shapes.world import (
    COLORS,
    FAMILIES,
    GRID_SIZE,
    IMAGE_SIZE,
    NUM_PATCHES,
    PATCH_SIZE,
    SHAPES,
    SIZE_CLASSES,
    Scene,
    SceneObject,
    VQASample,
    WorldConfig,
    make_scene,
    sample_vqa,
    score_answer,
    vocabulary,
)

__all__ = [
    "COLORS",
    "FAMILIES",
    "GRID_SIZE",
    "IMAGE_SIZE",
    "NUM_PATCHES",
    "PATCH_SIZE",
    "SHAPES",
    "SIZE_CLASSES",
    "Scene",
    "SceneObject",
    "VQASample",
    "WorldConfig",
    "make_scene",
    "sample_vqa",
    "score_answer",
    "vocabulary",
]
