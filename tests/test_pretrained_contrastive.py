"""The contrastive model shipped in the package (python/xrdflow/pretrained/contrastive.pt).

It must load on its own (weights_only), match its provenance file, and retrieve unseen
structures from their patterns far above chance: the bundled test split comes from the
MP-20 test set, which its training run removed (leakage check in `xrdflow train`).
"""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("e3nn")

from xrdflow import pretrained  # noqa: E402
from xrdflow._fileio import sha256_file  # noqa: E402

pytestmark = pytest.mark.skipif("contrastive" not in pretrained.available(),
                                reason="no contrastive model shipped in this installation")


def test_shipped_model_matches_its_provenance():
    path = pretrained.path("contrastive")
    meta = pretrained.provenance("contrastive")
    assert meta["sha256"] == sha256_file(path)
    assert meta["command"].startswith("xrdflow train --config configs/")
    from xrdflow.train import load_model

    model, cfg = load_model(path)
    assert not model.training
    assert cfg.make_simulator().n_points == model.n_points
    assert set(cfg.data.leakage_against) and any("mp20_biternary_test" in s for s in cfg.data.leakage_against)


def test_shipped_model_retrieves_unseen_structures_far_above_chance():
    from xrdflow.data import bundled_dataset
    from xrdflow.evaluate.evaluation import evaluate
    from xrdflow.evaluate.gallery import gallery_from_structures

    torch.set_num_threads(1)
    test = bundled_dataset("test")
    n = 100
    gallery = gallery_from_structures(test.structures[:n], test.ids[:n])
    result = evaluate(pretrained.path("contrastive"), gallery, queries="clean", baselines=(), use_cache=False)
    assert result["n_gallery"] == n
    # chance is 1 % top-1 and 5 % top-5 among 100 structures
    assert result["top5"] >= 0.5, result
    assert result["top1"] >= 0.15, result


def test_shipped_structure_embeddings_with_their_patterns_beat_the_crystal_tower():
    """The shipped model embeds a structure with its own simulated pattern (simulated_pattern_weight > 0,
    chosen on validation): on realistic queries of unseen structures it must beat its crystal tower alone by
    far on the 7,118-structure test gallery (README), and here too."""
    from xrdflow.data import bundled_dataset
    from xrdflow.evaluate.evaluation import evaluate
    from xrdflow.evaluate.gallery import gallery_from_structures
    from xrdflow.train import load_model

    model, _ = load_model(pretrained.path("contrastive"))
    if not model.uses_simulated_patterns:
        pytest.skip("the shipped model embeds structures by the crystal tower alone")
    torch.set_num_threads(1)
    test = bundled_dataset("test")
    n = 100
    gallery = gallery_from_structures(test.structures[:n], test.ids[:n])
    result = evaluate(pretrained.path("contrastive"), gallery, queries="realistic", seed=0, baselines=(),
                      use_cache=False)
    # measured: 99 % against the crystal tower's 92 % (chance 1 %); the gap widens with the gallery (README)
    assert result["top1"] >= 0.95, result
    assert result["top1"] > result["crystal_tower"]["top1"], result
