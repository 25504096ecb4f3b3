"""`xrdflow demo` end to end with tiny settings (a 5-step model on 64 structures per split), its reuse of
finished stages, and the shipped-model plumbing (xrdflow.pretrained, --checkpoint pretrained:NAME)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("e3nn")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from xrdflow import pretrained  # noqa: E402
from xrdflow.cli import main  # noqa: E402

TINY = ["--from-scratch", "--steps", "5", "--limit", "64", "--fit-queries", "3"]
PICTURES = ("stream_augmentation.png", "tsne.png", "retrieval.png", "fit.png")


def _check_png(path: Path) -> None:
    from matplotlib.image import imread

    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert float(np.std(img[..., :3])) > 0.01, f"{path} is blank"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    with open(out / "summary.json", encoding="utf-8") as fh:
        return out, json.load(fh)


def test_demo_writes_summary_and_pictures(demo_run):
    out, s = demo_run
    assert s["complete"] is True
    for key in ("command", "model_source", "wall_time_s", "stage_seconds", "stage_reused", "hardware", "results",
                "meaning", "files"):
        assert key in s
    assert set(s["stage_seconds"]) == {"data", "stream", "train", "evaluate", "fit", "summary"}
    assert not any(s["stage_reused"].values())
    assert s["hardware"]["os_cpu_count"] >= 1 and s["hardware"]["torch_threads"] >= 1
    r = s["results"]
    assert r["data"]["used"] == {"train": 64, "val": 64, "test": 64}
    assert r["data"]["bundled_split_sizes"] == {"train": 2400, "val": 300, "test": 300}
    assert r["data"]["reflection_cache"]["bytes_per_structure_in_memory"] > 100
    assert r["stream"]["patterns"] == 64 and r["stream"]["patterns_per_s"] > 0
    assert len(r["stream"]["figure_draws"]) == 3
    sizes = {d["crystallite_size_nm"] for d in r["stream"]["figure_draws"]}
    assert len(sizes) == 3  # three different draws of the same structure
    assert r["train"]["mode"] == "scratch" and r["train"]["steps"] == 5
    ev = r["evaluate"]
    assert ev["n_gallery"] == 64
    for kind in ("clean", "realistic"):
        assert set(ev[kind]["baselines"]) == {"pattern_cosine", "peak_fom"}
        assert 0.0 <= ev[kind]["model"]["top1"] <= ev[kind]["model"]["top10"] <= 1.0
    # clean queries are the gallery's own patterns: pattern matching is exact on them
    assert ev["clean"]["baselines"]["pattern_cosine"]["top1"] == 1.0
    # the third stage runs on realistic queries only, on the asked-for number of them
    assert "hybrid_fit" not in ev["clean"] and ev["realistic"]["hybrid_fit"]["n_queries"] == 3
    assert 0.0 <= ev["realistic"]["hybrid"]["top1"] <= 1.0
    fit = r["fit"]
    assert abs(fit["a_angstrom"]["refined"] - fit["a_angstrom"]["true"]) < 5 * fit["a_angstrom"]["su"] + 1e-4
    for name in PICTURES:
        assert name in s["files"]
        _check_png(out / name)
    for name in ("summary.md", "summary.json", "eval_clean.json", "eval_realistic.json", "train/last.pt"):
        assert (out / name).is_file(), name
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Retrieval on the bundled test split (64 structures)" in md and "pattern_cosine" in md
    assert "| realistic | hybrid + fits of its best 10, the same 3 queries |" in md
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_demo_resume_reuses_finished_stages(demo_run):
    out, first = demo_run
    before = (out / "train" / "last.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), *TINY, "--resume"]) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["stage_reused"]["train"] and s["stage_reused"]["evaluate"] and s["stage_reused"]["fit"]
    assert (out / "train" / "last.pt").stat().st_mtime_ns == before
    assert s["results"]["evaluate"] == first["results"]["evaluate"]


def test_demo_resume_with_other_steps_is_refused(demo_run, capsys):
    out, _ = demo_run
    assert main(["demo", "--out", str(out), "--from-scratch", "--steps", "7", "--limit", "64", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "other settings" in err


def test_demo_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    assert main(["demo", "--out", str(tmp_path), *TINY]) == 2
    assert "not written by `xrdflow demo`" in capsys.readouterr().err


def test_demo_fine_tunes_the_shipped_model_on_a_fresh_clone(tmp_path):
    """The shipped model is a second training stage whose config names its first stage (init_from:
    runs/...); the demo must fine-tune it without that file."""
    if "contrastive" not in pretrained.available():
        pytest.skip("no shipped contrastive model in this build")
    from xrdflow.demo import finetune_config
    from xrdflow.train import read_checkpoint

    base = read_checkpoint(pretrained.path("contrastive"), map_location="cpu")["config"]
    cfg = finetune_config({**base, "init_from": "runs/missing/best.pt"}, tmp_path / "train", steps=3)
    assert cfg.init_from is None and cfg.optim.max_steps == 3
    # a third stage's hard-negative batches need its init_from: they are dropped with it
    cfg = finetune_config({**base, "init_from": "runs/missing/best.pt", "hard_negatives": {"group_size": 32}},
                          tmp_path / "train", steps=3)
    assert cfg.init_from is None and cfg.hard_negatives is None
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "1", "--limit", "256", "--fit-queries", "0", "--no-fit"]) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["results"]["train"]["mode"] == "finetune" and s["complete"] is True


def test_pretrained_path_error_says_how_to_make_it():
    with pytest.raises(FileNotFoundError, match="no shipped model 'no_such_model'.*To produce it"):
        pretrained.path("no_such_model")
    if "contrastive" not in pretrained.available():
        with pytest.raises(FileNotFoundError, match="xrdflow train --config configs/contrastive_small.yaml"):
            pretrained.path("contrastive")
    else:
        assert pretrained.path("contrastive").suffix == ".pt"
    with pytest.raises(ValueError, match="plain name"):
        pretrained.path("../x.pt")
    assert isinstance(pretrained.available(), dict)
    assert pretrained.resolve("model.pt") == "model.pt"


def test_evaluate_cli_accepts_pretrained_prefix(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", "pretrained:no_such_model", "--gallery", str(tmp_path)]) == 2
    assert "--checkpoint: no shipped model 'no_such_model'" in capsys.readouterr().err
