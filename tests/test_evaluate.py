"""xrdflow.evaluate: retrieval metrics, baselines, gallery cache, search and the evaluate/search commands.

Models are tiny and randomly initialised: these tests check the machinery, not a trained model.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os

import numpy as np
import pytest

import xrdflow as xf
from xrdflow import examples
from xrdflow.data import bundled_path, bundled_splits
from xrdflow.evaluate import (FREQUENCY_BINS, EmbeddingIndex, PatternCosine, PeakFOM, Gallery, convert_two_theta,
                              fused_scores, gallery_embeddings, gallery_from_structures, load_gallery, pattern_on_grid,
                              per_group, ranks_from_scores, ranks_of_all, reciprocal_rank_fusion, retrieval_summary,
                              space_group_top1, top_indices, topk_from_ranks)
from xrdflow.evaluate.retrieval import RankAccumulator, frequency_bin

SIM_KW = {"radiation": "CuKa", "two_theta": [10.0, 80.0], "n_points": 1024, "crystallite_size_nm": 15.0}


# ------------------------------------------------------------------ helpers
def _bundled_rows(split: str, n: int) -> list[dict]:
    keep = bundled_splits()[split][:n]
    with gzip.open(bundled_path(), "rt", newline="") as fh:
        rows = {r["material_id"]: r for r in csv.DictReader(io.StringIO(fh.read()))}
    return [rows[i] for i in keep]


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    return _write_csv(tmp_path_factory.mktemp("gal") / "gallery.csv", _bundled_rows("test", 24))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("e3nn")
    from xrdflow.models import CrystalEncoderConfig, DualTower, DualTowerConfig, PatternEncoderConfig
    from xrdflow.train.checkpoint import save_checkpoint
    from xrdflow.train.config import TrainConfig, config_to_dict

    torch.manual_seed(0)
    mc = DualTowerConfig(
        crystal=CrystalEncoderConfig(hidden_irreps="8x0e+4x1o", lmax=1, product_channels=4, correlation=2,
                                     num_interactions=1, radial_hidden=(8,), readout_dim=8, feat_dim=16,
                                     max_neighbors=8, cutoff_angstrom=4.0),
        pattern=PatternEncoderConfig(n_points=1024, stem_channels=8, widths=(8, 16), blocks=(1, 1)),
        embed_dim=16, projection_hidden=0)
    cfg = TrainConfig(model=mc, simulator=dict(SIM_KW))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"config": config_to_dict(cfg), "model": DualTower(mc).state_dict(), "step": 0})
    return path


@pytest.fixture(scope="module")
def fused_checkpoint(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint's weights with model.simulated_pattern_weight = 2: gallery structures embedded
    with their own simulated patterns."""
    import torch

    from xrdflow.train.checkpoint import save_checkpoint

    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["config"]["model"]["simulated_pattern_weight"] = 2.0
    path = tmp_path_factory.mktemp("ckpt_fused") / "tiny_fused.pt"
    save_checkpoint(path, ckpt)
    return path


# ------------------------------------------------------------------ metrics
def test_ranks_on_hand_made_matrix_with_ties_counted_against_the_query():
    s = np.array([[0.9, 0.1, 0.2, 0.0],     # correct (0) strictly best      -> rank 1
                  [0.5, 0.5, 0.1, 0.0],     # tie with column 0              -> rank 2 (pessimistic)
                  [0.3, 0.9, 0.5, 0.8],     # two above                      -> rank 3
                  [0.7, 0.7, 0.7, 0.7]])    # all equal                      -> rank 4
    r = ranks_from_scores(s, np.arange(4))
    assert r.tolist() == [1, 2, 3, 4]
    assert topk_from_ranks(r, (1, 2, 3, 4)) == {"top1": 0.25, "top2": 0.5, "top3": 0.75, "top4": 1.0}
    # Order of the gallery does not matter (permute columns, move the truth with them).
    perm = np.array([3, 1, 0, 2])
    inv = np.argsort(perm)
    assert ranks_from_scores(s[:, perm], inv[np.arange(4)]).tolist() == [1, 2, 3, 4]
    # The displayed ranking puts the lower column first among ties, best score first.
    assert top_indices(s, 4).tolist() == [[0, 2, 1, 3], [0, 1, 2, 3], [1, 3, 2, 0], [0, 1, 2, 3]]
    acc = RankAccumulator(keep=2)
    acc.add(s[:2], [0, 1])
    acc.add(s[2:], [2, 3])
    assert acc.ranks.tolist() == [1, 2, 3, 4] and acc.top1.tolist() == [0, 0, 1, 0]
    assert acc.best.tolist() == [[0, 2], [0, 1], [1, 3], [0, 1]]


def test_reciprocal_rank_fusion_on_a_hand_made_3x3_example():
    from xrdflow.evaluate.evaluation import _rankings

    model = np.array([[0.9, 0.5, 0.1],
                      [0.2, 0.2, 0.8],      # columns 0 and 1 tie: both get the worse rank, 3
                      [0.3, 0.6, 0.6]])
    fom = np.array([[0.1, 0.7, 0.0],
                    [0.0, 0.9, 0.9],
                    [0.5, 0.4, 0.0]])
    rm, rf = ranks_of_all(model), ranks_of_all(fom)
    assert rm.tolist() == [[1, 2, 3], [3, 3, 1], [3, 2, 2]] and rm.dtype == np.int32
    assert rf.tolist() == [[2, 1, 3], [3, 2, 2], [1, 2, 3]]
    fused = reciprocal_rank_fusion([rm, rf])               # k = 60 (Cormack et al. 2009)
    expected = [[1 / 61 + 1 / 62, 1 / 62 + 1 / 61, 2 / 63],
                [2 / 63, 1 / 63 + 1 / 62, 1 / 61 + 1 / 62],
                [1 / 63 + 1 / 61, 2 / 62, 1 / 62 + 1 / 63]]
    np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(fused_scores([model, fom]), fused)
    # Query 0: its entry ties with column 1 (ranks 1+2 vs 2+1), counted against it -> 2.
    # Query 1: column 2 is ahead -> 2.  Query 2: 1/61+1/63 > 2/62 > 1/62+1/63 -> 3.
    assert ranks_from_scores(fused, np.arange(3)).tolist() == [2, 2, 3]
    assert reciprocal_rank_fusion([rm, rf], k=0)[2].tolist() == pytest.approx([1 / 3 + 1, 1, 1 / 2 + 1 / 3])
    # Blockwise (2 rows, then 1) gives the same, with the partner's ranking unchanged.
    main, hybrid, _ = _rankings(lambda a, b: fom[a:b], 3, 2, None, block=2, fuse_with=lambda a, b: model[a:b])
    assert hybrid.ranks.tolist() == [2, 2, 3] and hybrid.top1.tolist() == [0, 2, 0]
    assert main.ranks.tolist() == ranks_from_scores(fom, np.arange(3)).tolist()
    # Every column's rank agrees with the correct-column rank of the metrics, ties included.
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(6, 9)).astype(np.float32)
    for t in range(9):
        assert ranks_of_all(s)[:, t].tolist() == ranks_from_scores(s, np.full(6, t)).tolist()
    with pytest.raises(ValueError, match="integers >= 1"):
        reciprocal_rank_fusion([rm - 1, rf])
    with pytest.raises(ValueError, match="one shape"):
        reciprocal_rank_fusion([rm, rf[:2]])
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([rm], k=-1)


def test_per_crystal_system_split_and_frequency_bins():
    ranks = np.array([1, 2, 1, 7, 1, 11])
    systems = np.array(["cubic", "cubic", "monoclinic", "monoclinic", "monoclinic", "triclinic"])
    out = per_group(ranks, systems, (1, 10), order=xf.data.CRYSTAL_SYSTEMS)
    assert list(out) == ["triclinic", "monoclinic", "cubic"]   # crystal-system order, absent ones left out
    assert out["cubic"] == {"n": 2, "top1": 0.5, "top10": 1.0}
    assert out["monoclinic"]["n"] == 3 and out["monoclinic"]["top1"] == pytest.approx(2 / 3)
    assert out["triclinic"] == {"n": 1, "top1": 0.0, "top10": 0.0}
    assert [frequency_bin(c) for c in (0, 1, 2, 9, 10, 99, 100, 999, 1000, 10**6)] == \
        ["0", "1", "2-9", "2-9", "10-99", "10-99", "100-999", "100-999", ">=1000", ">=1000"]
    assert [b[0] for b in FREQUENCY_BINS][:2] == ["0", "1"]
    train = {225: 808, 14: 50, 3: 1, 24: 1}
    res = space_group_top1(true_sg=[225, 225, 225, 3, 24, 14, 99], retrieved_sg=[225, 225, 221, 3, 14, 14, 99],
                           train_counts=train)
    assert res["bins"]["100-999"] == {"n_queries": 3, "n_space_groups": 1, "accuracy": pytest.approx(2 / 3)}
    assert res["bins"]["1"] == {"n_queries": 2, "n_space_groups": 2, "accuracy": 0.5}
    assert res["bins"]["10-99"]["accuracy"] == 1.0 and res["bins"]["0"]["accuracy"] == 1.0
    assert res["most_frequent"] == {"space_group": 225, "train_count": 808, "n_queries": 3,
                                    "accuracy": pytest.approx(2 / 3)}
    assert res["overall"] == pytest.approx(5 / 7)


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="gallery is empty"):
        ranks_from_scores(np.zeros((3, 0)), [0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="one entry per query"):
        ranks_from_scores(np.eye(3), [0, 1])
    with pytest.raises(ValueError, match="one group label per query"):
        per_group([1, 2], ["cubic"])


# ------------------------------------------------------------------ baselines
def test_pattern_cosine_is_perfect_on_clean_queries_of_a_small_gallery():
    structures = xf.data.bundled_dataset("test").structures[:60]
    sim = xf.Simulator(**{**SIM_KW, "two_theta": tuple(SIM_KW["two_theta"])})
    refl = sim.reflections(structures)
    clean = sim.render(refl)[0]
    b = PatternCosine(clean)
    b.prepare(clean)
    ranks = ranks_from_scores(b.scores(0, len(structures)), np.arange(len(structures)))
    assert topk_from_ranks(ranks)["top1"] == 1.0
    # Realistic queries are harder: the baseline must not be perfect there, or the test data is trivial.
    real = sim.render(refl, augmentation=xf.Augmentation.realistic(), seed=0)[0]
    b.prepare(real)
    r_real = ranks_from_scores(b.scores(0, len(structures)), np.arange(len(structures)))
    assert r_real.max() > 1


def test_peak_fom_ranks_the_examples_first_on_clean_queries():
    structures = [xf.Structure.from_cif(examples.path(n)) for n in ("NaCl", "Si", "RuO2")]
    structures += xf.data.bundled_dataset("test").structures[:40]   # distractors
    sim = xf.Simulator("CuKa", (10.0, 80.0), 2048, crystallite_size_nm=40.0)
    refl = sim.reflections(structures)
    clean = sim.render(refl)[0]
    fom = PeakFOM(sim, refl)
    fom.prepare(clean)
    scores = fom.scores(0, len(structures))
    assert scores.shape == (len(structures), len(structures))
    assert np.all((scores >= 0) & (scores <= 1 + 1e-6))
    ranks = ranks_from_scores(scores, np.arange(len(structures)))
    assert ranks[:3].tolist() == [1, 1, 1]
    assert fom.n_without_peaks == 0
    # A query with its peaks moved by 1 degree no longer matches its own card best.
    shifted = np.interp(sim.two_theta_deg - 1.0, sim.two_theta_deg, clean[0])
    fom.prepare(shifted[None, :])
    assert fom.scores(0, 1)[0, 0] < scores[0, 0] - 0.3


# ------------------------------------------------------------------ gallery cache
def test_gallery_cache_is_reused_validated_and_invalidated(tmp_path, small_csv, tiny_checkpoint):
    from xrdflow.evaluate.evaluation import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    gal = load_gallery(small_csv)
    assert len(gal) == 24 and gal.failures == [] and gal.space_groups.dtype == np.int64
    cache = tmp_path / "cache"
    first = gallery_embeddings(model, gal, tiny_checkpoint, cache_dir=cache)
    assert not first.reused and first.path.is_file()
    assert first.embeddings.shape == (24, 16) and first.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first.embeddings, axis=1), 1.0, rtol=1e-5)
    second = gallery_embeddings(model, gal, tiny_checkpoint, cache_dir=cache)
    assert second.reused and second.path == first.path
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    # Another gallery (one structure fewer) gets its own entry; the embeddings of the rest agree.
    smaller = Gallery(gal.ids[1:], gal.structures[1:], gal.space_groups[1:])
    third = gallery_embeddings(model, smaller, tiny_checkpoint, cache_dir=cache)
    assert not third.reused and third.path != first.path
    np.testing.assert_allclose(third.embeddings, first.embeddings[1:], atol=1e-5)
    # A damaged or foreign file under the right name is recomputed, never trusted.
    first.path.write_bytes(b"not an npz")
    again = gallery_embeddings(model, gal, tiny_checkpoint, cache_dir=cache)
    assert not again.reused and again.reason.startswith("unreadable")
    np.testing.assert_allclose(again.embeddings, first.embeddings, atol=1e-6)
    with np.load(first.path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["ids"] = data["ids"][::-1].copy()
    with open(first.path, "wb") as fh:
        np.savez(fh, **data)
    assert gallery_embeddings(model, gal, tiny_checkpoint, cache_dir=cache).reason == "ids differ"
    # A changed checkpoint (other bytes) gives another cache entry.
    other = tmp_path / "other.pt"
    other.write_bytes(tiny_checkpoint.read_bytes() + b"\0")
    from xrdflow.evaluate.gallery import cache_path, file_hash

    assert cache_path(cache, file_hash(other), gal.content_hash()) != first.path


def test_fused_gallery_embeddings_by_hand_and_cached_with_the_crystal_towers(tmp_path, small_csv, tiny_checkpoint,
                                                                            fused_checkpoint):
    from xrdflow.evaluate.evaluation import load_checkpoint
    from xrdflow.evaluate.gallery import encode_patterns, encode_structures

    model, cfg = load_checkpoint(fused_checkpoint)
    assert model.uses_simulated_patterns and model.simulated_pattern_weight == 2.0
    sim = cfg.make_simulator()
    gal = load_gallery(small_csv)
    with pytest.raises(ValueError, match="simulated_pattern_weight = 2.*simulator="):
        gallery_embeddings(model, gal, fused_checkpoint, cache_dir=tmp_path)
    first = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, cache_dir=tmp_path)
    # the crystal tower's part is the unfused checkpoint's (same weights); the fusion is normalize(c + 2 p)
    plain, _ = load_checkpoint(tiny_checkpoint)
    c = gallery_embeddings(plain, gal, tiny_checkpoint, cache_dir=tmp_path).embeddings
    np.testing.assert_allclose(first.crystal_embeddings, c, atol=1e-6)
    np.testing.assert_allclose(encode_structures(plain, gal.structures), c, atol=1e-6)
    p = encode_patterns(model, sim.render(sim.reflections(gal.structures))[0])
    by_hand = (c + 2 * p) / np.linalg.norm(c + 2 * p, axis=1, keepdims=True)
    np.testing.assert_allclose(first.embeddings, by_hand, atol=1e-5)
    assert np.abs(first.embeddings - c).max() > 1e-2
    again = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, cache_dir=tmp_path)
    assert again.reused
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    np.testing.assert_array_equal(again.crystal_embeddings, first.crystal_embeddings)
    # a cache file of the previous format (structure embeddings only) is recomputed, not trusted
    with np.load(first.path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files if k != "crystal_embeddings"}
    data["version"] = np.int64(1)
    with open(first.path, "wb") as fh:
        np.savez(fh, **data)
    old = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, cache_dir=tmp_path)
    assert not old.reused and old.reason == "lacks ['crystal_embeddings']"


def test_fused_gallery_embeddings_of_a_partial_scan_cut_the_gallery_patterns_alike(tmp_path, small_csv,
                                                                                   tiny_checkpoint, fused_checkpoint,
                                                                                   monkeypatch):
    from xrdflow.evaluate.evaluation import cut_queries, load_checkpoint
    from xrdflow.evaluate.gallery import structure_embeddings

    model, cfg = load_checkpoint(fused_checkpoint)
    sim = cfg.make_simulator()
    gal = load_gallery(small_csv)
    whole = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, cache_dir=tmp_path)
    cut = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, scan_deg=(20.0, 50.0), cache_dir=tmp_path)
    assert cut.path != whole.path and not cut.reused
    clean = sim.render(sim.reflections(gal.structures))[0]
    by_hand = structure_embeddings(model, whole.crystal_embeddings, cut_queries(clean, sim.two_theta_deg, (20.0, 50.0)))
    np.testing.assert_allclose(cut.embeddings, by_hand, atol=1e-5)
    assert np.abs(cut.embeddings - whole.embeddings).max() > 1e-3
    np.testing.assert_array_equal(cut.crystal_embeddings, whole.crystal_embeddings)
    assert gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, scan_deg=(20.0, 50.0),
                              cache_dir=tmp_path).reused
    # another range reuses the cached crystal-tower embeddings: the crystal tower does not run again
    import xrdflow.evaluate.gallery as gallery_module

    def no_crystal_tower(*a, **k):
        raise AssertionError("the crystal tower ran again for another scan range")

    monkeypatch.setattr(gallery_module, "encode_structures", no_crystal_tower)
    other = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, scan_deg=(30.0, 60.0), cache_dir=tmp_path)
    assert not other.reused
    np.testing.assert_array_equal(other.crystal_embeddings, whole.crystal_embeddings)
    monkeypatch.undo()
    # a file renamed to another range's name is refused by its stored range
    import shutil

    wrong = cut.path.with_name(cut.path.name.replace("20.000-50.000", "25.000-50.000"))
    shutil.copy(cut.path, wrong)
    again = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, scan_deg=(25.0, 50.0), cache_dir=tmp_path)
    assert again.path == wrong and not again.reused and again.reason == "made for another scan range"
    # the crystal tower alone has nothing to cut: one cache entry for every range
    plain, _ = load_checkpoint(tiny_checkpoint)
    a = gallery_embeddings(plain, gal, tiny_checkpoint, cache_dir=tmp_path)
    b = gallery_embeddings(plain, gal, tiny_checkpoint, simulator=sim, scan_deg=(20.0, 50.0), cache_dir=tmp_path)
    assert b.reused and b.path == a.path


def test_evaluate_fused_model_reports_the_crystal_tower_too(tmp_path, small_csv, tiny_checkpoint, fused_checkpoint):
    from xrdflow.evaluate.evaluation import evaluate, load_checkpoint, make_queries
    from xrdflow.evaluate.gallery import encode_patterns

    kw = dict(queries="realistic", seed=1, baselines=(), cache_dir=tmp_path)
    fused = evaluate(fused_checkpoint, small_csv, **kw)
    plain = evaluate(tiny_checkpoint, small_csv, **kw)
    assert fused["simulated_pattern_weight"] == 2.0 and plain["simulated_pattern_weight"] == 0.0
    assert "crystal_tower" not in plain
    # the crystal tower alone ranks exactly as the unfused checkpoint with the same weights
    for k in ("top1", "top3", "top5", "top10"):
        assert fused["crystal_tower"][k] == plain[k]
    model, cfg = load_checkpoint(fused_checkpoint)
    sim = cfg.make_simulator()
    gal = load_gallery(small_csv)
    refl = sim.reflections(gal.structures)
    G = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, cache_dir=tmp_path).embeddings
    r = ranks_from_scores(encode_patterns(model, make_queries(sim, refl, "realistic", 1)) @ G.T, np.arange(len(gal)))
    assert {k: fused[k] for k in ("top1", "top3", "top5", "top10")} == pytest.approx(topk_from_ranks(r))


def test_search_with_a_fused_model(tmp_path, small_csv, fused_checkpoint):
    from xrdflow.evaluate.evaluation import load_checkpoint
    from xrdflow.evaluate.gallery import encode_patterns
    from xrdflow.evaluate.search import search_gallery

    model, cfg = load_checkpoint(fused_checkpoint)
    sim = cfg.make_simulator()
    gal = load_gallery(small_csv)
    y = sim.render(sim.reflections(gal.structures[5:6]))[0][0]
    path = _two_column(tmp_path / "q.xy", np.asarray(sim.two_theta_deg), y)
    res = search_gallery(path, fused_checkpoint, gal, k=24, cache_dir=tmp_path, wavelength="CuKa")
    G = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, cache_dir=tmp_path)
    assert G.reused     # search cached the fused embeddings (and the reflections they came from)
    # the listed order and scores are those of the fused embeddings, not of the crystal tower's alone
    s = (encode_patterns(model, res["pattern"][None, :]) @ G.embeddings.T)[0]
    np.testing.assert_allclose(res["scores"], s[res["indices"]], atol=1e-5)
    assert np.all(np.diff(res["scores"]) <= 1e-6)
    assert not np.allclose(s, (encode_patterns(model, res["pattern"][None, :]) @ G.crystal_embeddings.T)[0])
    assert res["embedding_cache"]["gallery_scan_range_deg"] is None     # a whole scan: whole gallery patterns
    # a partial measured scan (20-50 deg): the gallery's patterns are cut to the range it covers
    tt = np.asarray(sim.two_theta_deg)
    inside = (tt >= 20.0) & (tt <= 50.0)
    with pytest.warns(RuntimeWarning, match="covers only 43 %"):
        part = search_gallery(_two_column(tmp_path / "part.xy", tt[inside], y[inside]), fused_checkpoint, gal,
                              k=24, cache_dir=tmp_path, wavelength="CuKa")
    lo, hi = part["embedding_cache"]["gallery_scan_range_deg"]
    assert (lo, hi) == (tt[inside][0], tt[inside][-1])
    Gp = gallery_embeddings(model, gal, fused_checkpoint, simulator=sim, scan_deg=(lo, hi), cache_dir=tmp_path)
    assert Gp.reused
    sp = (encode_patterns(model, part["pattern"][None, :]) @ Gp.embeddings.T)[0]
    np.testing.assert_allclose(part["scores"], sp[part["indices"]], atol=1e-5)


def test_embedding_index_dense_and_faiss_agree():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = emb[[3, 7]] + 0.01
    s_d, i_d = EmbeddingIndex(emb, "dense").search(q, 5)
    assert i_d[:, 0].tolist() == [3, 7]
    pytest.importorskip("faiss")
    s_f, i_f = EmbeddingIndex(emb, "faiss").search(q, 5)
    np.testing.assert_array_equal(i_f, i_d)
    np.testing.assert_allclose(s_f, s_d, rtol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        EmbeddingIndex(np.zeros((0, 8)))


# ------------------------------------------------------------------ search and wavelengths
def test_two_theta_conversion_goes_through_d():
    tt, ok = convert_two_theta([20.0, 40.0, 170.0], 1.5406, 0.7093)
    assert ok.tolist() == [True, True, True]
    d = 1.5406 / (2 * np.sin(np.radians(np.array([20.0, 40.0]) / 2)))
    np.testing.assert_allclose(0.7093 / (2 * np.sin(np.radians(tt[:2] / 2))), d, rtol=1e-12)
    tt, ok = convert_two_theta([20.0, 100.0], 0.7093, 1.5406)     # 100 deg at Mo is beyond reach at Cu
    assert ok.tolist() == [True, False] and np.isnan(tt[1])
    with pytest.raises(ValueError, match="positive wavelength"):
        convert_two_theta([20.0], 0.0, 1.5406)


def _two_column(path, tt, y):
    np.savetxt(path, np.column_stack([tt, y]))
    return path


def test_search_runs_end_to_end_on_a_two_column_file(tmp_path, small_csv, tiny_checkpoint, capsys):
    from xrdflow.cli import main

    gal = load_gallery(small_csv)
    s = gal.structures[4]
    mo = xf.Simulator("MoKa", (4.0, 40.0), 3000, crystallite_size_nm=15.0)
    pat = _two_column(tmp_path / "q.xy", mo.two_theta_deg, 1000 * mo.pattern(s) + 10)
    argv = ["search", str(pat), "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv), "-k", "4",
            "--wavelength", "MoKa", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "converted from 0.7093 A to the model's 1.54056 A" in out
    lines = out.strip().splitlines()
    assert lines[1].split()[:2] == ["rank", "id"] and len(lines) == 2 + 4
    assert all(line.split()[1] in gal.ids for line in lines[2:])
    assert main(argv) == 0 and "(cached)" in capsys.readouterr().out
    # Same ranking from the Python API, and the measured pattern lands where the model's simulator puts it.
    from xrdflow.evaluate import search_gallery
    from xrdflow.io import read_pattern

    res = search_gallery(pat, tiny_checkpoint, gal, k=4, wavelength="MoKa", cache_dir=tmp_path / "cache")
    assert [r.split()[1] for r in lines[2:]] == res["ids"]
    cu = xf.Simulator(**{**SIM_KW, "two_theta": tuple(SIM_KW["two_theta"])})
    y, info = pattern_on_grid(read_pattern(pat), cu, wavelength="MoKa")
    ref = cu.pattern(s)
    peak_at = cu.two_theta_deg[np.argmax(ref)]
    assert abs(cu.two_theta_deg[np.argmax(y)] - peak_at) < 0.15 and info["coverage"] == 1.0


def test_search_rerank_peak_fom_fuses_and_caches_reflections(tmp_path, small_csv, tiny_checkpoint, capsys):
    from xrdflow.cli import main
    from xrdflow.evaluate import search_gallery

    gal = load_gallery(small_csv)
    cu = xf.Simulator(**{**SIM_KW, "two_theta": tuple(SIM_KW["two_theta"])})
    pat = _two_column(tmp_path / "q.xy", cu.two_theta_deg, 1000 * cu.pattern(gal.structures[4]) + 10)
    cache = tmp_path / "cache"
    argv = ["search", str(pat), "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv), "-k", "5",
            "--wavelength", "CuKa", "--cache-dir", str(cache), "--rerank", "peak_fom"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "reciprocal rank fusion of model and peak_fom, k=60" in out and "reflections computed" in out
    lines = out.strip().splitlines()
    assert lines[2].split()[:2] == ["rank", "id"] and "fused" in lines[2] and len(lines) == 3 + 5
    assert len(list(cache.glob("refl_*.npz"))) == 1
    assert main(argv) == 0 and "reflections cached" in capsys.readouterr().out
    res = search_gallery(pat, tiny_checkpoint, gal, k=24, wavelength="CuKa", cache_dir=cache, rerank="peak_fom")
    rr = res["rerank"]
    assert rr["reflection_cache"]["reused"] and sorted(res["indices"].tolist()) == list(range(24))
    np.testing.assert_allclose(res["scores"], 1 / (60 + rr["model_ranks"]) + 1 / (60 + rr["peak_fom_ranks"]))
    assert np.all(np.diff(res["scores"]) <= 0)
    # A clean pattern of entry 4: the peak figure of merit puts it first (rank 1, no tie).
    assert rr["peak_fom_ranks"][res["indices"].tolist().index(4)] == 1
    with pytest.raises(ValueError, match="rerank must be"):
        search_gallery(pat, tiny_checkpoint, gal, wavelength="CuKa", cache_dir=cache, rerank="cosine")


def test_search_rerank_fit_lists_the_fused_best_by_rwp(tmp_path, small_csv, tiny_checkpoint, capsys):
    """A measured pattern of entry 4 with a 1.5 % larger cell: the fits refine the cell and put entry 4
    first with the lowest Rwp, whatever rank the (random) model gave it."""
    from xrdflow.cli import main
    from xrdflow.evaluate import search_gallery

    gal = load_gallery(small_csv)
    s = gal.structures[4]
    big = type(s)(s.lattice * 1.015, s.frac, s.numbers, s.charges, s.occupancy, s.b_iso, s.label)
    cu = xf.Simulator(**{**SIM_KW, "two_theta": tuple(SIM_KW["two_theta"])})
    y = 1000 * cu.pattern(big) + 10
    pat = _two_column(tmp_path / "q.xy", cu.two_theta_deg, np.random.default_rng(0).poisson(y).astype(float))
    cache = tmp_path / "cache"
    res = search_gallery(pat, tiny_checkpoint, gal, k=8, wavelength="CuKa", cache_dir=cache, rerank="fit",
                         fit_candidates=5)
    rr = res["rerank"]
    assert "then whole-pattern fits of its best 5 ranked by Rwp" in rr["method"] and rr["fit_candidates"] == 5
    assert res["indices"][0] == 4 and abs(rr["cell_factor"][0] - 1.015) < 0.005
    assert np.all(np.diff(rr["r_wp"][:5]) >= 0) and np.all(np.isnan(rr["r_wp"][5:]))
    # The fits reorder the fused best 5 only; the rest keep the fused order.
    assert sorted(rr["fused_ranks"][:5].tolist()) == [1, 2, 3, 4, 5] and rr["fused_ranks"][5:].tolist() == [6, 7, 8]
    argv = ["search", str(pat), "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv), "-k", "3",
            "--wavelength", "CuKa", "--cache-dir", str(cache), "--rerank", "fit", "--fit-candidates", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "Rwp %" in lines[2] and len(lines) == 3 + 3 and lines[3].split()[1] == gal.ids[4]
    with pytest.raises(ValueError, match="fit_candidates must be"):
        search_gallery(pat, tiny_checkpoint, gal, wavelength="CuKa", cache_dir=cache, rerank="fit", fit_candidates=0)


def test_evaluate_fit_rerank_on_a_query_subset(tmp_path, small_csv, tiny_checkpoint, capsys):
    from xrdflow.cli import main
    from xrdflow.evaluate.evaluation import evaluate

    res = evaluate(tiny_checkpoint, small_csv, queries="realistic", seed=1, cache_dir=tmp_path / "cache",
                   fit_queries=8, fit_candidates=5)
    hf = res["hybrid_fit"]
    same = hf["hybrid_same_queries"]
    assert hf["n_queries"] == 8 and hf["candidates"] == 5 and hf["query_seed"] == 1
    assert len(set(hf["queries"])) == 8 and hf["queries"] == sorted(hf["queries"])
    assert expected_subset(24, 8, 1) == hf["queries"]
    # Re-ranking inside the best 5 moves nothing across rank 5: top-5 and top-10 are the hybrid's.
    assert hf["top5"] == same["top5"] and hf["top10"] == same["top10"]
    # The fits know the physics the random model does not: every query whose answer is in the list is found.
    assert hf["top1"] == hf["top5"] and hf["top1"] >= same["top1"]
    assert sum(v["n"] for v in hf["per_crystal_system"].values()) == 8
    # The model alone on the same 8 queries, counted by hand from its embeddings
    from xrdflow.evaluate.evaluation import load_checkpoint, make_queries
    from xrdflow.evaluate.gallery import encode_patterns

    model, cfg = load_checkpoint(tiny_checkpoint)
    sim = cfg.make_simulator()
    gal = load_gallery(small_csv)
    G = gallery_embeddings(model, gal, tiny_checkpoint, cache_dir=tmp_path / "cache").embeddings
    q = np.asarray(hf["queries"])
    r = ranks_from_scores(encode_patterns(model, make_queries(sim, sim.reflections(gal.structures), "realistic",
                                                              1)[q]) @ G.T, q)
    assert {k: hf["model_same_queries"][k] for k in ("top1", "top3", "top5", "top10")} == \
        pytest.approx(topk_from_ranks(r))
    # More queries than the gallery: all of them.
    assert evaluate(tiny_checkpoint, small_csv, queries="clean", cache_dir=tmp_path / "cache", fit_queries=99,
                    fit_candidates=3)["hybrid_fit"]["n_queries"] == 24
    with pytest.raises(ValueError, match="needs the peak_fom baseline"):
        evaluate(tiny_checkpoint, small_csv, baselines=("pattern_cosine",), fit_queries=4)
    with pytest.raises(ValueError, match="fit candidates must be an integer from 1 to 10"):
        evaluate(tiny_checkpoint, small_csv, cache_dir=tmp_path / "cache", fit_queries=4, fit_candidates=11)
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv), "--fit-rerank", "4",
            "--no-baselines"]
    assert main(argv) == 2 and "drop --no-baselines" in capsys.readouterr().err
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv), "--fit-rerank", "3",
            "--fit-candidates", "2", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0 and "hybrid + fit" in capsys.readouterr().out


def test_fit_rerank_fits_only_the_scanned_points_of_a_cut_query(monkeypatch, small_csv):
    """A query cut to 20-50 deg carries fill outside the scan: only the points inside are fitted."""
    import importlib

    from xrdflow.evaluate.evaluation import Ranking, cut_queries, fit_rerank

    ident = importlib.import_module("xrdflow.fit.identify")   # the module; xrdflow.fit.identify is the function

    full = load_gallery(small_csv)
    gal = gallery_from_structures(full.structures[:4], full.ids[:4])
    sim = xf.Simulator(**{**SIM_KW, "two_theta": tuple(SIM_KW["two_theta"])})
    Q = cut_queries(sim.render(sim.reflections(gal.structures))[0], sim.two_theta_deg, (20.0, 50.0))
    seen = []
    real = ident.fit_candidates

    def spy(pattern, structures, radiation=None, **kw):
        seen.append((pattern[0][0], pattern[0][-1], len(pattern[0]), len(pattern[1])))
        return real(pattern, structures, radiation, **kw)

    monkeypatch.setattr(ident, "fit_candidates", spy)
    best = np.array([[1, 0, 2], [0, 1, 2], [3, 0, 2], [0, 1, 2]])       # query 3's answer is not listed
    hyb = Ranking(ranks=np.array([2, 1, 3, 5]), top1=best[:, 0], best=best, best_scores=np.zeros((4, 3)))
    res = fit_rerank(sim, gal, Q, hyb, n_queries=4, candidates=3, scan_deg=(20.0, 50.0))
    assert len(seen) == 4 and all(20.0 <= a and b <= 50.0 and n == m for a, b, n, m in seen)
    assert res["top1"] == 0.75 and res["hybrid_same_queries"]["top1"] == 0.25
    assert res["top5"] == 1.0      # query 3 keeps the hybrid's rank 5


def expected_subset(n: int, m: int, seed: int) -> list:
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False)).tolist()


def test_bad_inputs_raise_clear_errors(tmp_path, small_csv, tiny_checkpoint, capsys):
    from xrdflow.cli import main
    from xrdflow.evaluate.evaluation import evaluate
    from xrdflow.io import read_pattern

    missing = tmp_path / "nope.pt"
    assert main(["evaluate", "--checkpoint", str(missing), "--gallery", str(small_csv)]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        evaluate(missing, small_csv)
    # Wavelength: absent, contradicting the file, or putting the data outside the model's range.
    cu = xf.Simulator(**{**SIM_KW, "two_theta": tuple(SIM_KW["two_theta"])})
    plain = _two_column(tmp_path / "plain.xy", cu.two_theta_deg, cu.pattern(xf.Structure.from_cif(examples.path("Si"))))
    with pytest.raises(ValueError, match="does not say its wavelength"):
        pattern_on_grid(read_pattern(plain), cu)
    assert main(["search", str(plain), "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv),
                 "--cache-dir", str(tmp_path / "c")]) == 2
    assert "--wavelength" in capsys.readouterr().err
    stated = tmp_path / "stated.xy"
    stated.write_text("# wavelength 1.5406\n" + "\n".join(f"{a} {b}" for a, b in zip(cu.two_theta_deg, cu.axis)))
    p = read_pattern(stated)
    assert p.wavelengths == (1.5406,)
    with pytest.raises(ValueError, match="the file says the wavelength is 1.5406"):
        pattern_on_grid(p, cu, wavelength="MoKa")
    assert pattern_on_grid(p, cu, wavelength=1.5406)[1]["file_wavelength"] == 1.5406   # agreeing is fine
    far = _two_column(tmp_path / "far.xy", np.linspace(100, 150, 200), np.ones(200))
    with pytest.raises(ValueError, match="outside the model's range|no measured point"):
        pattern_on_grid(read_pattern(far), cu, wavelength="CuKa")
    # Empty galleries.
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ValueError):
        load_gallery(empty_dir)
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("material_id,cif\n")
    with pytest.raises(ValueError, match="no readable structure"):
        load_gallery(empty_csv)
    with pytest.raises(ValueError, match="empty"):
        gallery_from_structures([])
    with pytest.raises(ValueError, match="empty"):
        PatternCosine(np.zeros((0, 10)))


# ------------------------------------------------------------------ evaluate end to end
def test_evaluate_command_writes_json_and_figures(tmp_path, small_csv, tiny_checkpoint, capsys):
    from xrdflow.cli import main

    out_json = tmp_path / "res.json"
    figs = tmp_path / "figs"
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv), "--queries", "realistic",
            "--seed", "3", "--json", str(out_json), "--out-dir", str(figs), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "pattern_cosine" in text and "peak_fom" in text
    res = json.loads(out_json.read_text())
    for key in ("n_gallery", "top1", "top3", "top5", "top10", "per_crystal_system", "baselines", "space_group_top1",
                "queries", "seed", "checkpoint", "timing"):
        assert key in res, key
    assert res["n_gallery"] == 24 and res["queries"] == "realistic" and res["seed"] == 3
    assert 0 <= res["top1"] <= res["top3"] <= res["top5"] <= res["top10"] <= 1
    assert sum(v["n"] for v in res["per_crystal_system"].values()) == 24
    for name in ("pattern_cosine", "peak_fom"):
        b = res["baselines"][name]
        assert set(("top1", "top3", "top5", "top10", "per_crystal_system")) <= set(b)
    assert res["space_group_top1"]["frequency_source"] == "gallery"
    assert sum(v["n_queries"] for v in res["space_group_top1"]["bins"].values()) == 24
    for name in ("tsne.png", "retrieval.png"):
        assert (figs / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The hybrid: fractions, and the same numbers as fusing the two full 24 x 24 matrices directly.
    hyb = res["hybrid"]
    assert hyb["method"] == "reciprocal rank fusion of model and peak_fom, k=60" and "hybrid (RRF)" in text
    assert 0 <= hyb["top1"] <= hyb["top3"] <= hyb["top5"] <= hyb["top10"] <= 1
    assert sum(v["n"] for v in hyb["per_crystal_system"].values()) == 24
    from xrdflow.evaluate.evaluation import load_checkpoint, make_queries
    from xrdflow.evaluate.gallery import encode_patterns

    model, cfg = load_checkpoint(tiny_checkpoint)
    sim = cfg.make_simulator()
    gal = load_gallery(small_csv)
    refl = sim.reflections(gal.structures)
    Q = make_queries(sim, refl, "realistic", 3)
    G = gallery_embeddings(model, gal, tiny_checkpoint, cache_dir=tmp_path / "cache").embeddings
    fom = PeakFOM(sim, refl)
    fom.prepare(Q)
    r = ranks_from_scores(fused_scores([encode_patterns(model, Q) @ G.T, fom.scores(0, 24)]), np.arange(24))
    assert {k: hyb[k] for k in ("top1", "top3", "top5", "top10")} == pytest.approx(topk_from_ranks(r))
    # Same numbers from the embedding cache on a second run; realistic queries are reproducible.
    argv2 = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv), "--queries", "realistic",
             "--seed", "3", "--json", str(out_json), "--no-baselines", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv2) == 0
    capsys.readouterr()
    res2 = json.loads(out_json.read_text())
    assert res2["embedding_cache"]["reused"] and res2["top1"] == res["top1"] and res2["baselines"] == {}


def test_evaluate_scan_range_cuts_the_queries_only(tmp_path, small_csv, tiny_checkpoint, capsys):
    from xrdflow.cli import main
    from xrdflow.evaluate.evaluation import cut_queries, evaluate, load_checkpoint

    model, cfg = load_checkpoint(tiny_checkpoint)
    sim = cfg.make_simulator()
    tt = sim.two_theta_deg
    Q = sim.render(sim.reflections(load_gallery(small_csv).structures))[0]
    cut = cut_queries(Q, tt, (20.0, 50.0))
    inside = (tt >= 20.0) & (tt <= 50.0)
    assert np.array_equal(cut[:, inside], Q[:, inside])                    # the scan itself is untouched
    assert np.array_equal(cut[:, ~inside], np.broadcast_to(Q[:, inside].min(axis=1)[:, None], cut[:, ~inside].shape))
    assert not np.array_equal(cut, Q) and Q.flags.owndata                    # a copy; the input is kept
    for bad in ((50.0, 20.0), (200.0, 300.0), (float("nan"), 30.0)):
        with pytest.raises(ValueError, match="scan range"):
            cut_queries(Q, tt, bad)

    # evaluate ranks with the cut queries: the same numbers as scoring them by hand
    from xrdflow.evaluate.gallery import encode_patterns

    part = evaluate(tiny_checkpoint, small_csv, queries="clean", baselines=(), cache_dir=tmp_path / "cache",
                    scan_deg=(20.0, 50.0))
    G = gallery_embeddings(model, load_gallery(small_csv), tiny_checkpoint, cache_dir=tmp_path / "cache").embeddings
    by_hand = topk_from_ranks(ranks_from_scores(encode_patterns(model, cut) @ G.T, np.arange(len(Q))))
    assert part["scan_range_deg"] == [20.0, 50.0]
    assert {k: part[k] for k in ("top1", "top3", "top5", "top10")} == pytest.approx(by_hand)
    assert not np.allclose(encode_patterns(model, cut), encode_patterns(model, Q))

    out_json = tmp_path / "cut.json"
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--gallery", str(small_csv), "--no-baselines",
            "--scan-range", "20", "50", "--json", str(out_json), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert "clean queries cut to 20-50 deg" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["top1"] == pytest.approx(part["top1"])
    assert main(argv[:-4] + ["--scan-range", "50", "20"]) != 0
    assert "START must be below END" in capsys.readouterr().err


def test_retrieval_summary_uses_gallery_labels():
    ranks = np.array([1, 3, 1])
    top1 = np.array([0, 0, 2])
    out = retrieval_summary(ranks, top1, np.array(["cubic", "cubic", "hexagonal"]), np.array([225, 221, 194]),
                            {225: 5, 221: 1, 194: 1})
    assert out["top1"] == pytest.approx(2 / 3) and out["per_crystal_system"]["cubic"]["n"] == 2
    assert out["space_group_top1"]["overall"] == pytest.approx(2 / 3)   # query 1 retrieved a 225 for a 221
