"""Data for training and evaluation.

* :mod:`xrdflow.data.readers` -- structures from CSV(.gz) files with a ``cif``
  column, CIF folders and extxyz, parsed in parallel with failures reported;
  the bundled MP-20 subset with its fixed split.
* :mod:`xrdflow.data.labels` -- crystal system, Laue class, space group and
  extinction group of each of the 230 space groups.
* :mod:`xrdflow.data.stream` -- :class:`PatternStream`, patterns rendered on
  the fly for PyTorch (imported on first use: only it needs torch).
"""
from .labels import (CRYSTAL_SYSTEMS, LAUE_CLASSES, N_EXTINCTION_GROUPS, absent_reflections, crystal_system,
                     extinction_group, extinction_group_members, labels_for, laue_class, n_extinction_groups)
from .readers import LoadResult, bundled_dataset, bundled_path, bundled_splits, load_structures

_STREAM_NAMES = ("PatternStream", "distributed_rank_world", "similarity_groups")


def __getattr__(name):
    # Lazy: readers and labels must work (and worker processes start fast)
    # without importing torch.
    if name in _STREAM_NAMES:
        from . import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'xrdflow.data' has no attribute {name!r}")


__all__ = ["CRYSTAL_SYSTEMS", "LAUE_CLASSES", "LoadResult", "N_EXTINCTION_GROUPS", "PatternStream",
           "absent_reflections", "bundled_dataset", "bundled_path", "bundled_splits", "crystal_system",
           "distributed_rank_world", "extinction_group", "extinction_group_members", "labels_for", "laue_class",
           "load_structures", "n_extinction_groups", "similarity_groups"]
