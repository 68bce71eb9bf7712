"""Attention capture: per-head per-residue statistics, the extractor LightningModule, the cache."""

from .cache import StatsCache, default_cache_dir, sequence_hash
from .extractor import AttentionExtractor, CacheWriter
from .run import Extraction, extract
from .stats import STAT_NAMES, ProteinStats, column_stats, reference_stats

__all__ = [
    "AttentionExtractor", "CacheWriter", "Extraction", "ProteinStats", "STAT_NAMES", "StatsCache",
    "column_stats", "default_cache_dir", "extract", "reference_stats", "sequence_hash",
]
