"""ShapesWorld: a synthetic VQA world and the small CLIP + LLaVA that rclib trains and ships on it.

- `rclib.shapes.world`: scenes, masks and questions (numpy only), imported here.
- `rclib.shapes.tokenizer`, `rclib.shapes.build`: the world tokenizer and the model configs.
- `rclib.shapes.train`: `train(out_dir, quick=False)` reproduces `data/models/`.
- `rclib.shapes.evaluate`: VQA accuracy, text-to-patch pointing, visual-only pruning.
"""

from rclib.shapes.world import (
    COLORS,
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
    vocabulary,
)

__all__ = [
    "COLORS",
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
    "vocabulary",
]
