"""PatternStream: every structure once per epoch across ranks and workers,
deterministic draws whatever the split, zero-copy patterns, lazy cache."""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

import xrdflow as xf  # noqa: E402
from xrdflow import examples  # noqa: E402
from xrdflow.data import PatternStream  # noqa: E402
from xrdflow.data import stream as stream_mod  # noqa: E402

N_COPIES = 7  # 3 bundled structures x 7 = 21 (odd, so shards and batches are ragged)
AUG = xf.Augmentation.realistic()


@pytest.fixture(scope="module")
def structures():
    base = [xf.Structure.from_cif(examples.path(n)) for n in examples.names()]
    return base * N_COPIES


@pytest.fixture(scope="module")
def sim():
    return xf.Simulator(radiation="CuKa", two_theta=(10.0, 80.0), n_points=3000)


@pytest.fixture(scope="module")
def cache(sim, structures):
    return sim.reflections(structures)


def collect(iterable) -> list[dict]:
    return [dict(b) for b in iterable]


def indices_of(batches) -> np.ndarray:
    return np.concatenate([b["index"].numpy() for b in batches]) if batches else np.zeros(0, np.int64)


def by_index(batches, key="pattern") -> dict[int, np.ndarray]:
    out = {}
    for b in batches:
        for i, row in zip(b["index"].tolist(), b[key].numpy()):
            assert i not in out
            out[i] = row
    return out


def loader(stream, num_workers, **kw):
    return DataLoader(stream, batch_size=None, num_workers=num_workers, **kw)


def indices_per_fake_rank(monkeypatch, stream, num_workers, world_size=2) -> list[np.ndarray]:
    """The indices each rank streams, torch.distributed faked by replacing the rank lookup (inherited by
    forked workers); checks each rank's batch count against num_batches."""
    per_rank = []
    for rank in range(world_size):
        monkeypatch.setattr(stream_mod, "distributed_rank_world", lambda rank=rank: (rank, world_size))
        batches = collect(loader(stream, num_workers))
        assert len(batches) == stream.num_batches(world_size=world_size, num_workers=num_workers, rank=rank)
        per_rank.append(indices_of(batches))
    return per_rank


# ------------------------------------------------------------- coverage
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_structure_once_single_process(sim, cache, shuffle):
    stream = PatternStream(cache, sim, AUG, batch_size=4, shuffle=shuffle)
    batches = collect(stream)
    idx = indices_of(batches)
    assert sorted(idx.tolist()) == list(range(len(cache)))
    assert len(batches) == stream.num_batches() == 6
    assert [len(b["index"]) for b in batches] == [4, 4, 4, 4, 4, 1]
    if shuffle:
        assert not np.array_equal(idx, np.arange(len(cache)))
        assert np.array_equal(idx, stream.order())
    else:
        assert np.array_equal(idx, np.arange(len(cache)))
    for b in batches:
        assert b["pattern"].dtype == torch.float32 and b["pattern"].shape == (len(b["index"]), sim.n_points)
        assert b["index"].dtype == torch.int64


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_structure_once_with_workers(sim, cache, shuffle):
    stream = PatternStream(cache, sim, AUG, batch_size=4, shuffle=shuffle)
    batches = collect(loader(stream, 2))
    assert sorted(indices_of(batches).tolist()) == list(range(len(cache)))
    assert len(batches) == stream.num_batches(num_workers=2)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_structure_once_two_ranks(monkeypatch, sim, cache, shuffle, num_workers):
    """torch.distributed faked by replacing the rank lookup (inherited by forked workers)."""
    stream = PatternStream(cache, sim, AUG, batch_size=3, shuffle=shuffle)
    per_rank = indices_per_fake_rank(monkeypatch, stream, num_workers)
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(np.concatenate(per_rank).tolist()) == list(range(len(cache)))
    # explicit rank/world_size give the same shards
    for rank in range(2):
        explicit = PatternStream(cache, sim, None, batch_size=3, shuffle=shuffle, rank=rank, world_size=2)
        got = indices_of(collect(loader(explicit, num_workers)))
        assert sorted(got.tolist()) == sorted(per_rank[rank].tolist())


def test_rank_travels_with_pickled_stream(monkeypatch, sim, cache):
    """Spawned workers do not have torch.distributed initialized: the rank of the
    process that pickled the stream is used there."""
    import pickle

    stream = PatternStream(cache, sim, None, batch_size=4)
    monkeypatch.setattr(stream_mod, "distributed_rank_world", lambda: (1, 2))
    blob = pickle.dumps(stream)
    monkeypatch.setattr(stream_mod, "distributed_rank_world", lambda: None)
    assert np.array_equal(indices_of(collect(stream)), stream.order())  # here: rank 0 of 1
    clone = pickle.loads(blob)
    assert np.array_equal(indices_of(collect(clone)), stream.shard_indices(rank=1, world_size=2))
    monkeypatch.setattr(stream_mod, "distributed_rank_world", lambda: (0, 3))  # live value wins
    assert np.array_equal(indices_of(collect(clone)), stream.shard_indices(rank=0, world_size=3))


def _gloo_worker(rank, world_size, init_file, out_dir, cache, sim):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        stream = PatternStream(cache, sim, None, batch_size=4)
        np.save(os.path.join(out_dir, f"{rank}.npy"), indices_of(collect(stream)))
    finally:
        dist.destroy_process_group()


def test_every_structure_once_torch_distributed(tmp_path, sim, cache):
    """Two real gloo ranks (forked: ~1 s) pick their shards from torch.distributed."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    import torch.multiprocessing as tmp

    tmp.start_processes(_gloo_worker, args=(2, str(tmp_path / "init"), str(tmp_path), cache, sim), nprocs=2,
                        start_method="fork")
    got = [np.load(tmp_path / f"{r}.npy") for r in range(2)]
    stream = PatternStream(cache, sim, None, batch_size=4)
    for r in range(2):
        assert np.array_equal(got[r], stream.shard_indices(rank=r, world_size=2))
    assert sorted(np.concatenate(got).tolist()) == list(range(len(cache)))


@pytest.mark.parametrize("world_size,num_workers,batch_size", [(1, 1, 4), (1, 2, 4), (2, 2, 2), (2, 1, 3), (3, 2, 5)])
def test_drop_last(sim, cache, world_size, num_workers, batch_size):
    """Each shard is trimmed to N // shards, then its incomplete final batch is dropped:
    full batches only, no repeats, the same number of batches on every rank."""
    stream = PatternStream(cache, sim, None, batch_size=batch_size, drop_last=True)
    total = world_size * num_workers
    per_shard = (len(cache) // total) // batch_size * batch_size
    seen = []
    for rank in range(world_size):
        n_rank = 0
        for worker in range(num_workers):
            shard = stream.shard_indices(rank=rank, world_size=world_size, worker=worker, num_workers=num_workers)
            assert len(shard) == per_shard
            seen.extend(shard.tolist())
            n_rank += len(shard) // batch_size
        assert stream.num_batches(world_size, num_workers, rank) == n_rank
    assert len(seen) == len(set(seen)) == total * per_shard
    # and what the DataLoader actually yields on one rank
    if world_size == 1:
        batches = collect(loader(stream, 0 if num_workers == 1 else num_workers))
        assert all(len(b["index"]) == batch_size for b in batches)
        assert len(batches) == stream.num_batches(1, num_workers)


def test_drop_last_false_keeps_partial_batches(sim, cache):
    stream = PatternStream(cache, sim, None, batch_size=4, drop_last=False, rank=1, world_size=2)
    sizes = [len(b["index"]) for b in stream]
    assert sizes == [4, 4, 2]  # shard 1 of 2 holds 10 of 21
    assert stream.num_batches(2, 1, rank=0) == 3 and stream.num_batches(2, 1, rank=1) == 3


def test_num_batches_matches_iteration(sim, cache):
    for bs in (1, 4, 21, 100):
        for nw in (0, 1, 2):
            stream = PatternStream(cache, sim, None, batch_size=bs)
            expected = sum(-(-len(stream.shard_indices(worker=w, num_workers=max(nw, 1))) // bs)
                           for w in range(max(nw, 1)))
            assert stream.num_batches(1, nw) == expected
    assert PatternStream(cache, sim, None, batch_size=4).num_batches(world_size=30, rank=29) == 0


def test_more_shards_than_structures(sim, cache):
    stream = PatternStream(cache, sim, None, batch_size=2)
    shards = [stream.shard_indices(rank=r, world_size=len(cache) + 3) for r in range(len(cache) + 3)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(cache)))
    assert list(PatternStream(cache, sim, None, rank=len(cache) + 1, world_size=len(cache) + 2)) == []


# ---------------------------------------------------------- determinism
def test_same_key_same_patterns_any_split(sim, cache):
    ref_stream = PatternStream(cache, sim, AUG, batch_size=4, seed=11)
    ref_stream.set_epoch(3)
    ref = collect(ref_stream)
    ref_patterns, ref_strain = by_index(ref), by_index(ref, "strain")
    for batch_size, num_workers in [(7, 0), (3, 2), (21, 2)]:
        stream = PatternStream(cache, sim, AUG, batch_size=batch_size, seed=11)
        stream.set_epoch(3)
        got = collect(loader(stream, num_workers))
        patterns, strain = by_index(got), by_index(got, "strain")
        assert patterns.keys() == ref_patterns.keys()
        for i in ref_patterns:
            assert np.array_equal(patterns[i], ref_patterns[i]), (batch_size, num_workers, i)
            assert np.array_equal(strain[i], ref_strain[i])


def test_epoch_and_seed_change_order_and_draws(sim, cache):
    stream = PatternStream(cache, sim, AUG, batch_size=8, seed=5)
    e0 = collect(stream)
    again = collect(stream)
    stream.set_epoch(1)
    assert stream.epoch == 1
    e1 = collect(stream)
    other = collect(PatternStream(cache, sim, AUG, batch_size=8, seed=6))
    assert np.array_equal(indices_of(e0), indices_of(again))
    assert all(np.array_equal(a["pattern"], b["pattern"]) for a, b in zip(e0, again))
    assert not np.array_equal(indices_of(e0), indices_of(e1))
    assert not np.array_equal(indices_of(e0), indices_of(other))
    p0, p1, p_other = by_index(e0), by_index(e1), by_index(other)
    for i in p0:
        assert not np.array_equal(p0[i], p1[i])
        assert not np.array_equal(p0[i], p_other[i])
    # the epoch feeds the render draws too
    y1, _ = sim.render(cache, indices=[0], augmentation=AUG, seed=5, epoch=1)
    assert np.array_equal(p1[0], y1[0])


def test_set_epoch_reaches_persistent_workers(sim, cache):
    stream = PatternStream(cache, sim, AUG, batch_size=8, seed=2)
    dl = loader(stream, 2, persistent_workers=True)
    first = by_index(collect(dl))
    stream.set_epoch(4)
    second = collect(dl)
    ref = PatternStream(cache, sim, AUG, batch_size=8, seed=2)
    ref.set_epoch(4)
    ref_patterns = by_index(collect(ref))
    got = by_index(second)
    assert all(np.array_equal(got[i], ref_patterns[i]) for i in ref_patterns)
    assert any(not np.array_equal(got[i], first[i]) for i in first)


def test_order_is_pcg64_permutation(sim, cache):
    stream = PatternStream(cache, sim, None, seed=9)
    stream.set_epoch(2)
    expected = np.random.Generator(np.random.PCG64([9, 2])).permutation(len(cache))
    assert np.array_equal(stream.order(), expected)
    assert np.array_equal(stream.order(2), expected)
    assert np.array_equal(PatternStream(cache, sim, shuffle=False).order(5), np.arange(len(cache)))


# ------------------------------------------------------------ contents
def test_pattern_is_zero_copy(sim, cache, monkeypatch):
    rendered = []
    original = sim.render

    def spy(*args, **kwargs):
        y, params = original(*args, **kwargs)
        rendered.append(y)
        return y, params

    monkeypatch.setattr(sim, "render", spy)
    stream = PatternStream(cache, sim, AUG, batch_size=8)
    for source in (stream, loader(stream, 0)):  # also through DataLoader(num_workers=0)
        rendered.clear()
        batches = collect(source)
        assert len(rendered) == len(batches) == 3
        for b, y in zip(batches, rendered):
            assert b["pattern"].data_ptr() == y.ctypes.data
            assert b["pattern"].is_contiguous()


def test_params_match_render(sim, cache):
    stream = PatternStream(cache, sim, AUG, batch_size=5, seed=3)
    stream.set_epoch(2)
    for b in stream:
        y, params = sim.render(cache, indices=b["index"].numpy(), augmentation=AUG, seed=3, epoch=2)
        assert set(b) == set(params) | {"pattern", "index"}
        assert np.array_equal(b["pattern"].numpy(), y)
        for name, value in params.items():
            t = b[name]
            assert isinstance(t, torch.Tensor)
            assert t.numpy().dtype == value.dtype, name
            assert t.shape == value.shape, name
            assert np.array_equal(t.numpy(), value, equal_nan=True), name
    assert b["strain"].shape[1:] == (6,) and b["counts"].dtype == torch.float64
    assert b["po_direction"].dtype == torch.int64 and b["index"].dtype == torch.int64
    # index and parameters share one storage (one shared-memory segment per batch from a worker)
    assert len({t.untyped_storage().data_ptr() for k, t in b.items() if k != "pattern"}) == 1


def test_params_through_workers(sim, cache):
    stream = PatternStream(cache, sim, AUG, batch_size=5, seed=3)
    direct = {k: by_index(collect(stream), k) for k in ("pattern", "strain", "counts", "po_direction")}
    got = collect(loader(stream, 2))
    for k, ref in direct.items():
        values = by_index(got, k)
        assert all(np.array_equal(values[i], ref[i]) for i in ref), k


@pytest.mark.parametrize("augmentation", [None, xf.Augmentation.none()])
def test_no_augmentation_yields_pattern_and_index(sim, cache, augmentation):
    batches = collect(PatternStream(cache, sim, augmentation, batch_size=10, shuffle=False))
    assert all(set(b) == {"pattern", "index"} for b in batches)
    clean, _ = sim.render(cache)
    assert np.array_equal(torch.cat([b["pattern"] for b in batches]).numpy(), clean)


# ------------------------------------------------------------ structures
@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Simulator.reflections counted per process (pids appended to a file, seen across forks)."""
    log = tmp_path / "builds.txt"
    original = xf.Simulator.reflections

    def reflections(self, structures, threads=None):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return original(self, structures, threads=threads)

    monkeypatch.setattr(xf.Simulator, "reflections", reflections)
    return lambda: log.read_text().split() if log.exists() else []


def test_from_structures_builds_once(sim, structures, cache, counted):
    stream = PatternStream(structures, sim, AUG, batch_size=8, seed=1)
    assert counted() == []  # lazy
    first = collect(stream)
    stream.set_epoch(1)
    collect(stream)
    assert counted() == [str(os.getpid())]
    ref = collect(PatternStream(cache, sim, AUG, batch_size=8, seed=1))
    assert all(np.array_equal(a["pattern"], b["pattern"]) for a, b in zip(first, ref))


def test_from_structures_workers_build_their_own(sim, structures, counted):
    stream = PatternStream(structures, sim, None, batch_size=4)
    batches = collect(loader(stream, 2))
    assert sorted(indices_of(batches).tolist()) == list(range(len(structures)))
    pids = counted()
    assert len(pids) == 2 and len(set(pids)) == 2 and str(os.getpid()) not in pids
    # built in the main process first: forked workers share it and build nothing
    stream.build_cache()
    collect(loader(stream, 2))
    assert counted() == pids + [str(os.getpid())]


# ------------------------------------------------------------ validation
def test_validation(sim, cache, structures):
    with pytest.raises(ValueError, match="batch_size"):
        PatternStream(cache, sim, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        PatternStream(cache, sim, batch_size=2.5)
    with pytest.raises(TypeError, match="Simulator"):
        PatternStream(cache, "sim")
    with pytest.raises(TypeError, match="Augmentation"):
        PatternStream(cache, sim, augmentation={"strain": 0.01})
    with pytest.raises(ValueError, match="empty"):
        PatternStream([], sim)
    with pytest.raises(ValueError, match="empty"):
        PatternStream(sim.reflections([]), sim)
    with pytest.raises(TypeError, match="list of structures"):
        PatternStream(structures[0], sim)
    with pytest.raises(TypeError):
        PatternStream([1, 2], sim)
    with pytest.raises(ValueError, match="threads"):
        PatternStream(cache, sim, threads=0)
    with pytest.raises(ValueError, match="seed"):
        PatternStream(cache, sim, seed=-1)
    with pytest.raises(ValueError, match="both"):
        PatternStream(cache, sim, rank=0)
    with pytest.raises(ValueError, match="rank"):
        PatternStream(cache, sim, rank=2, world_size=2)
    stream = PatternStream(cache, sim)
    with pytest.raises(ValueError, match="epoch"):
        stream.set_epoch(-1)
    with pytest.raises(TypeError):
        len(stream)
    PatternStream(cache, sim, threads=None)  # all cores is allowed


# ----------------------------------------------------------- scan range
def test_scan_range_cuts_like_a_short_measured_scan(sim, cache):
    scan = xf.ScanRange(probability=0.5, start_deg=(15.0, 30.0), end_deg=(50.0, 70.0))
    plain = by_index(collect(PatternStream(cache, sim, AUG, batch_size=4, seed=5)))
    got = collect(PatternStream(cache, sim, AUG, batch_size=4, seed=5, scan_range=scan))
    cut, start, end = by_index(got), by_index(got, "scan_start_deg"), by_index(got, "scan_end_deg")
    grid = sim.two_theta_deg
    n_cut = 0
    for i, y in cut.items():
        inside = (grid >= start[i]) & (grid <= end[i])
        # inside the scan the pattern is untouched; outside it is the smallest value inside
        assert np.array_equal(y[inside], plain[i][inside])
        assert np.all(y[~inside] == plain[i][inside].min())
        if start[i] > grid[0]:
            n_cut += 1
            assert 15.0 <= start[i] <= 30.0 and 50.0 <= end[i] <= 70.0
        else:
            assert end[i] == grid[-1] and np.array_equal(y, plain[i])
    assert 0 < n_cut < len(cut)  # 21 samples at p = 0.5


def test_scan_range_draws_do_not_depend_on_the_split(sim, cache):
    scan = xf.ScanRange(probability=0.7)
    ref = by_index(collect(PatternStream(cache, sim, AUG, batch_size=21, seed=2, scan_range=scan)))
    for batch_size, num_workers in [(4, 0), (3, 2)]:
        got = by_index(collect(loader(PatternStream(cache, sim, AUG, batch_size=batch_size, seed=2,
                                                    scan_range=scan), num_workers)))
        assert got.keys() == ref.keys()
        assert all(np.array_equal(got[i], ref[i]) for i in ref)
    epoch1 = PatternStream(cache, sim, AUG, batch_size=21, seed=2, scan_range=scan)
    epoch1.set_epoch(1)
    s0 = by_index(collect(PatternStream(cache, sim, AUG, batch_size=21, seed=2, scan_range=scan)), "scan_start_deg")
    s1 = by_index(collect(epoch1), "scan_start_deg")
    assert any(s0[i] != s1[i] for i in s0)  # a new epoch draws new ranges


# ------------------------------------------------------------- hard-negative batches
def test_similarity_groups_split_every_row_once_into_groups_of_look_alikes():
    from xrdflow.data import similarity_groups

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10.0, size=(8, 5))
    keys = np.repeat(centres, 16, axis=0) + rng.normal(scale=0.1, size=(128, 5))   # 8 tight clusters of 16
    cluster = np.repeat(np.arange(8), 16)
    groups = similarity_groups(keys, 16, np.random.default_rng(1))
    rows = np.concatenate(groups)
    assert sorted(rows.tolist()) == list(range(128))
    assert all(8 <= len(g) <= 16 for g in groups)
    # a random split of 128 rows into groups of 16 keeps ~2 of a group's rows in one cluster;
    # the tree keeps most of every group in one cluster
    purity = np.mean([np.bincount(cluster[g]).max() / len(g) for g in groups])
    assert purity > 0.9, purity
    # other directions, other groups; the same generator state, the same groups
    again = similarity_groups(keys, 16, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(groups, again))
    ragged = similarity_groups(keys[:37], 8, np.random.default_rng(2))
    assert sorted(np.concatenate(ragged).tolist()) == list(range(37)) and all(4 <= len(g) <= 8 for g in ragged)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        similarity_groups(keys[:, 0], 4, rng)
    with pytest.raises(ValueError, match="group_size"):
        similarity_groups(keys, 0, rng)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_hard_negative_order_keeps_groups_and_covers_every_structure_once(monkeypatch, sim, cache, num_workers):
    keys = np.repeat(np.eye(3) * 50.0, N_COPIES, axis=0)          # the 3 structures' copies are look-alikes
    keys += np.random.default_rng(0).normal(scale=0.01, size=keys.shape)
    stream = PatternStream(cache, sim, AUG, batch_size=4, similarity_keys=keys, group_size=7, seed=3)
    order = stream.order(0)
    assert sorted(order.tolist()) == list(range(len(cache)))
    # the order is the (seed, epoch) generator's groups in its random order; a group is mostly copies
    # of one structure (rows 7k..7k+6 of the keys)
    from xrdflow.data import similarity_groups

    rng = np.random.Generator(np.random.PCG64([3, 0]))
    groups = similarity_groups(keys, 7, rng)
    assert np.array_equal(order, np.concatenate([groups[i] for i in rng.permutation(len(groups))]))
    assert np.mean([np.bincount(g // N_COPIES).max() / len(g) for g in groups]) > 0.8
    assert np.array_equal(order, stream.order(0)) and not np.array_equal(order, stream.order(1))
    # sharded over 2 ranks (x workers): contiguous slices, every structure once, num_batches right
    per_rank = indices_per_fake_rank(monkeypatch, stream, num_workers)
    assert sorted(np.concatenate(per_rank).tolist()) == list(range(len(cache)))
    assert sorted(per_rank[0].tolist()) == sorted(order[:11].tolist())   # 21 over 2 ranks: 11 + 10
    # the draws are still keyed by (seed, epoch, index): the same pattern as a plain stream's
    one = {"rank": 0, "world_size": 1}
    plain = by_index(collect(PatternStream(cache, sim, AUG, batch_size=4, seed=3, **one)))
    grouped = by_index(collect(PatternStream(cache, sim, AUG, batch_size=4, seed=3, similarity_keys=keys,
                                             group_size=7, **one)))
    assert len(plain) == len(grouped) == len(cache)
    assert all(np.array_equal(plain[i], grouped[i]) for i in plain)


def test_hard_negative_keys_are_checked(sim, cache):
    with pytest.raises(ValueError, match=r"\(21, D\)"):
        PatternStream(cache, sim, AUG, similarity_keys=np.zeros((20, 4)))
    bad = np.zeros((21, 4))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        PatternStream(cache, sim, AUG, similarity_keys=bad)
    with pytest.raises(ValueError, match="group_size"):
        PatternStream(cache, sim, AUG, similarity_keys=np.zeros((21, 4)), group_size=0)
