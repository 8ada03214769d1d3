"""rclib: text-guided visual token compression (Recoverable Compression) for LLaVA-style models."""
from rclib.filters import outlier_count, topk_mask
from rclib.methods import METHODS, RCConfig, compress
from rclib.result import CompressionResult, Fate, Slot

__all__ = ["outlier_count", "topk_mask", "compress", "METHODS", "RCConfig", "CompressionResult", "Fate", "Slot"]
