"""vla/data: RLDS reading, the OXE registry, statistics, batches, and demo-set conversion."""
from vla.data.batches import (Augment, BatchConfig, Sampling, make_batch_iterator, mixture_norm_stats,
                              model_inputs)
from vla.data.rlds import load_frames, open_dataset
from vla.data.rlds_writer import Episode, write_rlds
from vla.data.statistics import compute_statistics

__all__ = ["Augment", "BatchConfig", "Episode", "Sampling", "compute_statistics", "load_frames",
           "make_batch_iterator", "mixture_norm_stats", "model_inputs", "open_dataset", "write_rlds"]
