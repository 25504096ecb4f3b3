"""Training data for PyTorch: patterns rendered on the fly (needs torch).

:class:`PatternStream` is an IterableDataset of whole batches; see
:mod:`xrdflow.data.stream` for ordering, sharding, determinism and the
recommended ``DataLoader(stream, batch_size=None, num_workers=2)``.
"""
from .stream import PatternStream, distributed_rank_world

__all__ = ["PatternStream", "distributed_rank_world"]
