"""Attention capture: per-head per-residue statistics, the extractor LightningModule, the cache."""

from .cache import StatsCache, default_cache_dir, sequence_hash
from .extractor import AttentionExtractor, CacheWriter, check_bf16, cpu_bf16_supported, window_plan
from .run import Extraction, extract, split_long
from .stats import STAT_NAMES, ProteinStats, column_stats, reference_stats

__all__ = [
    "STAT_NAMES",
    "AttentionExtractor",
    "CacheWriter",
    "Extraction",
    "ProteinStats",
    "StatsCache",
    "check_bf16",
    "column_stats",
    "cpu_bf16_supported",
    "default_cache_dir",
    "extract",
    "reference_stats",
    "sequence_hash",
    "split_long",
    "window_plan",
]
