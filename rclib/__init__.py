"""rclib: text-guided visual token compression (Recoverable Compression) for LLaVA-style models."""
from rclib.filters import outlier_count, topk_mask
from rclib.methods import METHODS, RCConfig, compress
from rclib.result import CompressionResult, Fate, Slot
from rclib.models import load  # light: transformers / open_clip are imported when load() runs

__all__ = ["outlier_count", "topk_mask", "compress", "METHODS", "RCConfig", "CompressionResult", "Fate", "Slot", "load"]
