"""Patterns rendered on the fly while a network trains: :class:`PatternStream`.

A :class:`PatternStream` is a :class:`torch.utils.data.IterableDataset` that
yields whole batches.  Each batch is one :meth:`xrdflow.Simulator.render` call
on the cached reflections (the expensive structure factors are computed once,
the instrument/sample effects are re-drawn every epoch)::

    import xrdflow as xf
    from torch.utils.data import DataLoader
    from xrdflow.data import PatternStream

    sim = xf.Simulator(radiation="CuKa", two_theta=(5, 90), n_points=4096)
    cache = sim.reflections(structures)                   # once, all cores
    stream = PatternStream(cache, sim, xf.Augmentation.realistic(), batch_size=64, seed=0)
    loader = DataLoader(stream, batch_size=None, num_workers=2, persistent_workers=False)
    for epoch in range(n_epochs):
        stream.set_epoch(epoch)                           # new order and new draws
        for batch in loader:
            batch["pattern"]   # (B, n_points) float32
            batch["index"]     # (B,) int64 positions in the cache
            batch["strain"]    # (B, 6) float64, ... one entry per drawn parameter

``batch_size=None`` in the DataLoader: the stream already yields batches.

Order and sharding
------------------
The order of an epoch is ``numpy.random.Generator(PCG64([seed, epoch])).permutation(N)``
(``arange(N)`` when ``shuffle=False``), the same in every process.  It is
split *strided* over the ``world_size * num_workers`` global shards: global
shard ``g = rank * num_workers + worker_id`` takes positions
``g, g + world_size * num_workers, ...`` of the order (as
:meth:`shard_indices` returns them).  Strided (rather than
contiguous) keeps the shards the same size to within one structure and, with
several workers, the order a rank sees close to the permutation.  Every
structure appears exactly once per epoch across all ranks and workers when
``drop_last=False``.  ``rank`` and ``world_size`` are, in this order of
precedence: the ``rank``/``world_size`` arguments; :mod:`torch.distributed`
when it is initialized in the iterating process (forked DataLoader workers
inherit it); the values it had in the process that pickled the stream
(spawned workers, whose own torch.distributed is not initialized); else 0
and 1.  The worker comes from :func:`torch.utils.data.get_worker_info`.

Hard-negative batches
---------------------
With ``similarity_keys`` (one feature row per structure, e.g. a trained
model's crystal embeddings) and ``shuffle=True``, the order of an epoch is
built from groups of ``group_size`` or fewer structures whose keys lie close
together, so that a batch holds several sets of look-alikes: in a contrastive
loss, where the other structures of the batch are the negatives, those are the
hard negatives that a random batch of a large, varied training set rarely
holds.  :func:`similarity_groups` forms the groups with a random-projection
tree (new random directions every epoch, from ``PCG64([seed, epoch])``), and
the groups are concatenated in a random order.  The shards are then
*contiguous* slices of that order (the first ``N % total`` shards one
structure longer), so that a group stays within one shard; the sizes are those
of the strided split, and every structure still appears exactly once per
epoch.

``drop_last=True`` drops, in each shard, the incomplete final batch, after
first trimming every shard to the common length ``N // (world_size *
num_workers)`` (the trim leaves out at most ``world_size * num_workers - 1``
structures of the epoch, like :class:`~torch.utils.data.DistributedSampler`;
the dropped batch fewer than ``batch_size`` more per shard).  Which
structures are left out changes with the epoch when shuffling.
Every rank then yields the same number of full batches, which
:class:`~torch.nn.parallel.DistributedDataParallel` needs (a rank that runs
out of batches first would leave the others waiting in an all-reduce).  With
``drop_last=False`` ranks may differ by up to ``num_workers`` batches.

Determinism
-----------
Every draw is keyed by (seed, epoch, structure index) in the core, so the
pattern and parameters of a structure in an epoch are the same bytes whatever
the batch size, the number of workers or ranks, and the thread count.

The epoch lives in a one-element shared-memory tensor, so :meth:`set_epoch`
reaches DataLoader workers that already exist (``persistent_workers=True``)
at their next pass, as well as freshly started ones.

Memory and workers
------------------
Pass a :class:`~xrdflow.Reflections` cache.  DataLoader workers are forked on
Linux: the cache's NumPy arrays are then shared copy-on-write with the parent
(they are only read, so their pages are never copied) and nothing is
deep-copied per worker.  With the ``spawn``/``forkserver`` start methods
(macOS, Windows, Python >= 3.14 default on Linux) each worker receives a
pickled copy instead.

A list of structures is also accepted; the cache is then built once, lazily,
in the process that first iterates.  With DataLoader workers that means each
worker builds its own copy (time and memory times ``num_workers``), and with
``persistent_workers=False`` again every epoch.  Call :meth:`build_cache` in
the main process before creating the DataLoader (forked workers then share
it), or better pass a cache.

Threads
-------
The core renders a batch in C++ threads.  ``threads=1`` (default) is right
for DataLoader workers (one core per worker, no oversubscription); with
``num_workers=0`` set ``threads=None`` (all cores) or the number of cores to
spare.

``len()`` is not defined: for an IterableDataset it would depend on the
number of workers, which the dataset does not know.  Use
:meth:`num_batches`.
"""
from __future__ import annotations

import math

import numpy as np

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("xrdflow.data needs PyTorch: pip install torch") from exc

from ..augment import Augmentation, ScanRange
from ..reflections import Reflections
from ..simulate import Simulator, _as_structure
from ..structure import Structure

__all__ = ["PatternStream", "distributed_rank_world", "similarity_groups"]


def similarity_groups(keys: np.ndarray, group_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split ``range(len(keys))`` into groups of at most ``group_size`` rows with close keys.

    A random-projection tree (Dasgupta and Freund, "Random projection trees and low dimensional
    manifolds", STOC 2008): a set larger than ``group_size`` is split in two halves at the median of
    its keys' projections on a random unit direction, recursively.  Each group thus holds between
    ``group_size // 2`` and ``group_size`` rows (fewer only when ``len(keys) < group_size // 2``);
    every row is in exactly one group.  The directions come from ``rng``.
    """
    keys = np.asarray(keys)
    if keys.ndim != 2 or keys.shape[0] == 0:
        raise ValueError(f"keys must be a non-empty (N, D) array, got shape {keys.shape}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    groups, stack = [], [np.arange(len(keys), dtype=np.int64)]
    while stack:
        rows = stack.pop()
        if len(rows) <= group_size:
            groups.append(rows)
            continue
        direction = rng.standard_normal(keys.shape[1])
        projection = keys[rows] @ direction
        order = np.argsort(projection, kind="stable")
        half = len(rows) // 2
        stack.append(rows[order[half:]])
        stack.append(rows[order[:half]])
    return groups


def distributed_rank_world() -> tuple[int, int] | None:
    """(rank, world_size) of torch.distributed when it is initialized in this process, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _packed_tensors(arrays: dict) -> dict:
    """Tensors with the arrays' values, dtypes and shapes, all views of ONE storage.

    A DataLoader worker moves every storage of a batch to its own shared-memory
    segment and passes a file descriptor for each: ~0.4 ms per storage here,
    so ~20 separate parameter tensors cost ~10 ms per batch, against ~0.1 ms
    once packed.  (The pattern keeps its own, zero-copy storage.)
    """
    align = 16
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    offsets, total = {}, 0
    for k, a in arrays.items():
        offsets[k] = total
        total += -(-a.nbytes // align) * align
    buf = np.empty(max(total, align), np.uint8)
    base = torch.from_numpy(buf)
    out = {}
    for k, a in arrays.items():
        start = offsets[k]
        buf[start:start + a.nbytes] = a.reshape(-1).view(np.uint8)
        dtype = torch.from_numpy(a[:0] if a.ndim else a.reshape(1)[:0]).dtype
        out[k] = base[start:start + a.nbytes].view(dtype).view(a.shape)
    return out


def _check_count(name: str, value, *, minimum: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{extra}, got {value!r}")
    return int(value)


def _check_seed(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2 ** 63:
        raise ValueError(f"{name} must be an integer in [0, 2^63), got {value!r}")
    return int(value)


class PatternStream(IterableDataset):
    """Batches of (augmented) patterns rendered on the fly from cached reflections.

    Parameters
    ----------
    structures_or_cache : a :class:`~xrdflow.Reflections` cache (recommended;
        see the module docs) or a non-empty list of structures
        (:class:`~xrdflow.Structure`, pymatgen or ASE), whose cache is built
        lazily in the first process that iterates.
    simulator : the :class:`~xrdflow.Simulator` that renders (and builds the
        cache when given structures).
    augmentation : an :class:`~xrdflow.Augmentation`, or None for clean
        patterns (then only ``pattern`` and ``index`` are yielded).
    batch_size : structures per yielded batch (the last one of a shard may be
        smaller unless ``drop_last``).
    seed : keys the shuffle and every augmentation draw, with the epoch.
    shuffle : permute the structures each epoch (else cache order).
    drop_last : drop each shard's incomplete final batch after trimming the
        shards to a common length (see the module docs).
    threads : C++ threads per render call (default 1: one per DataLoader
        worker); None = all cores.
    rank, world_size : override the torch.distributed lookup (e.g. to shard
        by hand); give both or neither.
    scan_range : an :class:`~xrdflow.ScanRange` that cuts patterns to partial
        scans after rendering (draws keyed like the augmentation's), adding
        ``scan_start_deg`` / ``scan_end_deg`` to the yielded parameters.
    similarity_keys : an (N, D) array of finite features, one row per
        structure (None: a plain permutation).  With ``shuffle`` each epoch's
        order is built from groups of look-alikes (hard-negative batches; see
        the module docs).
    group_size : structures per group of look-alikes (with ``similarity_keys``).

    Yields dicts of tensors: ``pattern`` (B, n_points) float32, made with
    :func:`torch.from_numpy` from the rendered array (no copy), ``index`` (B,)
    int64 cache indices, and one tensor per drawn parameter of
    :meth:`~xrdflow.Simulator.render` with its NumPy dtype (float64 values,
    int64 choices; ``strain`` (B, 6), ``counts`` (B,), ...).  ``index`` and
    the parameters are views of one storage (one shared-memory transfer per
    batch out of a DataLoader worker instead of one per tensor).
    """

    def __init__(self, structures_or_cache, simulator: Simulator, augmentation: Augmentation | None = None,
                 batch_size: int = 64, seed: int = 0, shuffle: bool = True, drop_last: bool = False,
                 threads: int | None = 1, *, rank: int | None = None, world_size: int | None = None,
                 scan_range: ScanRange | None = None, similarity_keys: np.ndarray | None = None,
                 group_size: int = 32):
        super().__init__()
        if not isinstance(simulator, Simulator):
            raise TypeError(f"simulator must be an xrdflow.Simulator, got {type(simulator).__name__}")
        if augmentation is not None and not isinstance(augmentation, Augmentation):
            raise TypeError(f"augmentation must be an xrdflow.Augmentation or None, got {type(augmentation).__name__}")
        if scan_range is not None and not isinstance(scan_range, ScanRange):
            raise TypeError(f"scan_range must be an xrdflow.ScanRange or None, got {type(scan_range).__name__}")
        self.simulator = simulator
        self.augmentation = augmentation
        self.scan_range = scan_range if scan_range is not None and scan_range.probability > 0 else None
        self.batch_size = _check_count("batch_size", batch_size, minimum=1)
        self.seed = _check_seed("seed", seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.threads = _check_count("threads", threads, minimum=1, allow_none=True)
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
        if world_size is not None:
            world_size = _check_count("world_size", world_size, minimum=1)
            rank = _check_count("rank", rank, minimum=0)
            if rank >= world_size:
                raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self._rank, self._world_size = rank, world_size
        self._pickled_rank_world: tuple[int, int] | None = None

        if isinstance(structures_or_cache, Reflections):
            self._cache: Reflections | None = structures_or_cache
            self._structures: list[Structure] | None = None
            self._n = len(structures_or_cache)
            if self._n == 0:
                raise ValueError("the Reflections cache is empty: nothing to stream")
            if augmentation is not None and not augmentation.is_none:
                simulator._check_cache_reach(structures_or_cache, augmentation)  # fail here, not in a worker
        else:
            if isinstance(structures_or_cache, (Structure, str, bytes)) or not hasattr(structures_or_cache, "__iter__"):
                raise TypeError("structures_or_cache must be a Reflections cache or a list of structures, got "
                                f"{type(structures_or_cache).__name__}")
            self._structures = [_as_structure(s) for s in structures_or_cache]
            if not self._structures:
                raise ValueError("the list of structures is empty: nothing to stream")
            self._cache = None
            self._n = len(self._structures)

        self.group_size = _check_count("group_size", group_size, minimum=1)
        self.similarity_keys = None
        if similarity_keys is not None:
            keys = np.asarray(similarity_keys)
            if keys.ndim != 2 or keys.shape[0] != self._n or keys.shape[1] == 0:
                raise ValueError(f"similarity_keys must be an ({self._n}, D) array (one row per structure), "
                                 f"got shape {keys.shape}")
            if not np.issubdtype(keys.dtype, np.floating) or not np.isfinite(keys).all():
                raise ValueError("similarity_keys must be finite floating-point features (NaN or inf found, "
                                 f"or dtype {keys.dtype})")
            self.similarity_keys = keys

        # The epoch in shared memory: set_epoch in the main process reaches
        # persistent DataLoader workers (forked or spawned) at their next pass.
        epoch = torch.zeros((), dtype=torch.int64)
        try:
            epoch.share_memory_()
        except (RuntimeError, OSError):  # pragma: no cover - no shared memory: fresh workers still see it
            pass
        self._epoch = epoch

    # ----------------------------------------------------------- properties
    @property
    def n_structures(self) -> int:
        """Number of structures in one epoch (before sharding)."""
        return self._n

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the order and the draws of the next pass (like DistributedSampler)."""
        self._epoch.fill_(_check_seed("epoch", epoch))

    @property
    def cache(self) -> Reflections:
        """The reflections cache, built now (with ``threads``) if the stream was given structures."""
        return self.build_cache(self.threads)

    def build_cache(self, threads: int | None = None) -> Reflections:
        """Build the cache in this process if not built yet (``threads=None``: all cores) and return it.

        Call it in the main process before creating a DataLoader so that
        forked workers share one cache instead of each building its own.
        """
        if self._cache is None:
            self._cache = self.simulator.reflections(self._structures, threads=threads)
            if len(self._cache) != self._n:  # pragma: no cover - defensive
                raise RuntimeError(f"expected {self._n} structures in the cache, got {len(self._cache)}")
        return self._cache

    # -------------------------------------------------------------- sharding
    def order(self, epoch: int | None = None) -> np.ndarray:
        """The (int64) order of all structures in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else _check_seed("epoch", epoch)
        if not self.shuffle:
            return np.arange(self._n, dtype=np.int64)
        rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
        if self.similarity_keys is None:
            return rng.permutation(self._n).astype(np.int64)
        groups = similarity_groups(self.similarity_keys, self.group_size, rng)
        return np.concatenate([groups[i] for i in rng.permutation(len(groups))])

    def _shard_length(self, total: int) -> int | None:
        """Common shard length under drop_last (a multiple of batch_size), else None."""
        if not self.drop_last:
            return None
        per = self._n // total
        return per - per % self.batch_size

    def shard_indices(self, epoch: int | None = None, rank: int = 0, world_size: int = 1, worker: int = 0,
                      num_workers: int = 1) -> np.ndarray:
        """Cache indices that worker ``worker`` of rank ``rank`` streams in ``epoch``, in order."""
        world_size = _check_count("world_size", world_size, minimum=1)
        num_workers = max(1, _check_count("num_workers", num_workers, minimum=0))
        if not (0 <= rank < world_size and 0 <= worker < num_workers):
            raise ValueError(f"need 0 <= rank < world_size and 0 <= worker < num_workers, got rank={rank}, "
                             f"world_size={world_size}, worker={worker}, num_workers={num_workers}")
        total = world_size * num_workers
        g = rank * num_workers + worker
        if self.similarity_keys is not None and self.shuffle:
            # contiguous, so that a group of look-alikes stays in one shard; the same sizes as strided
            start = g * (self._n // total) + min(g, self._n % total)
            shard = self.order(epoch)[start:start + self._n // total + (g < self._n % total)]
        else:
            shard = self.order(epoch)[g::total]
        keep = self._shard_length(total)
        return shard if keep is None else shard[:keep]

    def num_batches(self, world_size: int = 1, num_workers: int = 1, rank: int = 0) -> int:
        """Batches that rank ``rank`` yields in one epoch, summed over its ``num_workers``
        DataLoader workers (0 counts as 1: the main process), i.e. ``len(loader)`` there."""
        world_size = _check_count("world_size", world_size, minimum=1)
        num_workers = max(1, _check_count("num_workers", num_workers, minimum=0))
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        total = world_size * num_workers
        keep = self._shard_length(total)
        batches = 0
        for w in range(num_workers):
            g = rank * num_workers + w
            size = max(0, -(-(self._n - g) // total)) if keep is None else keep
            batches += math.ceil(size / self.batch_size)
        return batches

    def _rank_world(self) -> tuple[int, int]:
        if self._world_size is not None:
            return self._rank, self._world_size
        return distributed_rank_world() or self._pickled_rank_world or (0, 1)

    def __getstate__(self):
        # A spawned DataLoader worker gets the stream pickled by the main process,
        # where torch.distributed is initialized; it is not in the worker, so
        # the rank travels with the stream.
        state = self.__dict__.copy()
        if self._world_size is None:
            state["_pickled_rank_world"] = distributed_rank_world() or self._pickled_rank_world
        return state

    # ------------------------------------------------------------- iteration
    def __iter__(self):
        epoch = self.epoch  # read once: a set_epoch during the pass affects the next one
        rank, world_size = self._rank_world()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        indices = self.shard_indices(epoch, rank, world_size, worker, num_workers)
        if len(indices) == 0:
            return
        cache = self.cache
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start:start + self.batch_size]
            y, params = self.simulator.render(cache, indices=batch, augmentation=self.augmentation, seed=self.seed,
                                              epoch=epoch, threads=self.threads)
            if self.scan_range is not None:
                params = {**params, **self.scan_range.apply(y, self.simulator.two_theta_deg, batch, self.seed, epoch)}
            out = _packed_tensors({"index": batch, **params})
            out["pattern"] = torch.from_numpy(y)
            yield out

    def __repr__(self) -> str:
        source = "cache" if self._structures is None else "structures"
        return (f"PatternStream({self._n} {source}, batch_size={self.batch_size}, seed={self.seed}, "
                f"epoch={self.epoch}, shuffle={self.shuffle}, drop_last={self.drop_last}, "
                f"augmentation={'none' if self.augmentation is None else 'yes'}, threads={self.threads})")
