"""Space-group classifier (xrdflow.classify): head sizes and labels, training on a tiny set,
checkpoints and exact resume, ``xrdflow classify`` output with indistinguishable sets, wavelength
conversion, and bad input.

Tiny model (~19k parameters) on 48 bundled structures; the whole file runs in well under a minute.
"""
from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("yaml")

import xrdflow as xf  # noqa: E402
from xrdflow.classify import (ClassifierConfig, ClassifierModelConfig, SpaceGroupClassifier,  # noqa: E402
                              classify_patterns, config_from_dict, config_to_dict, head_sizes, load_classifier,
                              load_config, pattern_on_grid, read_checkpoint, save_config, train)
from xrdflow.cli import main  # noqa: E402
from xrdflow.data import labels as L  # noqa: E402
from conftest import prepared_data_cache, run_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "classifier_tiny.yaml"


def tiny_config(out_dir, augmentation="realistic", run_kw=None, **optim) -> ClassifierConfig:
    cfg = load_config(TINY)
    data = dataclasses.replace(cfg.data, max_structures=64, holdout_val=16, max_val_structures=16,
                               leakage_against=[])
    opt = dataclasses.replace(cfg.optim, **{"batch_size": 16, "warmup_steps": 2, "max_steps": 8, **optim})
    run = dataclasses.replace(cfg.run, **{"out_dir": str(out_dir), "device": "cpu", "progress": False,
                                          "log_every": 1, "val_every": 0, "checkpoint_every": 0, **(run_kw or {})})
    return dataclasses.replace(cfg, data=data, optim=opt, run=run, augmentation=augmentation)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # tiny convolutions: one thread is much faster than two competing on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    from xrdflow.classify.data import prepare_data

    return prepared_data_cache(tmp_path_factory, prepare_data, tiny_config, "classify_data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache):
    result = train(tiny_config(run_dir(tmp_path_factory.mktemp("classify_run"), data_cache)), log=lambda m: None)
    return Path(result.last_checkpoint)


# ------------------------------------------------------------------ heads and labels
def test_head_sizes_and_label_tables():
    assert head_sizes("laue") == {"crystal_system": 7, "extinction_group": 120, "space_group": 230}
    assert head_sizes("crystal_system")["extinction_group"] == 101
    model = SpaceGroupClassifier(load_config(TINY).model)
    out = model(torch.rand(3, 1024))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"crystal_system": (3, 7), "extinction_group": (3, 120),
                                                          "space_group": (3, 230)}
    sg = torch.tensor([1, 14, 62, 139, 166, 194, 225])
    t = model.targets_from_sg(sg)
    for i, g in enumerate(sg.tolist()):
        lab = L.labels_for(g)
        assert t["crystal_system"][i] == lab["crystal_system"]
        assert t["extinction_group"][i] == lab["extinction_group"]
        assert t["space_group"][i] == g - 1
    with pytest.raises(ValueError, match="1..230"):
        model.targets_from_sg(torch.tensor([0]))


# ------------------------------------------------------------------ training
def test_training_loss_decreases(tmp_path, data_cache):
    # clean patterns, 8 epochs of 48 structures: the training loss must fall well below its start
    cfg = tiny_config(run_dir(tmp_path, data_cache), augmentation="none", max_steps=24, lr=0.01, warmup_steps=1,
                      run_kw={"val_every": 24, "checkpoint_every": 24})
    result = train(cfg, log=lambda m: None)
    with open(Path(result.out_dir) / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    assert all(r["acc_sg"] != "" and r["patterns_per_s"] != "" for r in rows)
    val = [r for r in csv.DictReader(open(Path(result.out_dir) / "metrics.csv", newline="")) if r["split"] == "val"]
    assert val and 0 <= float(val[-1]["val_sg_top1"]) <= 1 and int(val[-1]["val_n"]) == 16


def test_checkpoint_round_trip_and_exact_resume(tmp_path, data_cache):
    full = train(tiny_config(run_dir(tmp_path, data_cache, "full")), log=lambda m: None)
    part_dir = run_dir(tmp_path, data_cache, "part")
    part = train(tiny_config(part_dir), stop_at_step=5, log=lambda m: None)  # stops mid-epoch (3 steps/epoch)
    assert part.step == 5
    ck = read_checkpoint(part.last_checkpoint)
    assert ck["step"] == 5 and ck["epoch"] == 1 and ck["batch_in_epoch"] == 2
    resumed = train(tiny_config(part_dir), resume=True, log=lambda m: None)
    assert resumed.step == full.step == 8
    a = read_checkpoint(full.last_checkpoint)["model"]
    b = read_checkpoint(resumed.last_checkpoint)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # metrics rows of the resumed run continue the interrupted one without duplicates
    with open(part_dir / "metrics.csv", newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh) if r["split"] == "train"]
    assert steps == list(range(1, 9))
    # load_classifier: same weights, eval mode, config round trip
    model, cfg = load_classifier(full.last_checkpoint)
    assert not model.training
    assert config_to_dict(cfg) == config_to_dict(tiny_config(tmp_path / "full"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, a[k])
    # no second run into an existing directory without --resume; resume needs the same config
    with pytest.raises(ValueError, match="--resume"):
        train(tiny_config(part_dir), log=lambda m: None)
    with pytest.raises(ValueError, match="cannot resume"):
        train(tiny_config(part_dir, lr=0.5), resume=True, log=lambda m: None)


def test_config_yaml_round_trip_and_bad_config(tmp_path):
    cfg = tiny_config(tmp_path / "x")
    save_config(cfg, tmp_path / "c.yaml")
    assert config_to_dict(load_config(tmp_path / "c.yaml")) == config_to_dict(cfg)
    with pytest.raises(ValueError, match="unknown key 'model.widths'"):
        config_from_dict({"model": {"widths": [8]}})
    with pytest.raises(ValueError, match="n_points"):
        config_from_dict({"simulator": {"n_points": 512}})
    with pytest.raises(ValueError, match="loss_weights"):
        ClassifierModelConfig(loss_weights=(0, 0, 0))
    with pytest.raises(ValueError, match="scheme"):
        ClassifierModelConfig(scheme="ita")
    scan = {"probability": 0.3, "start_deg": [5.0, 30.0], "end_deg": [45.0, 90.0]}
    with_scan = dataclasses.replace(cfg, scan_range=scan)
    save_config(with_scan, tmp_path / "s.yaml")
    assert load_config(tmp_path / "s.yaml").make_scan_range() == xf.ScanRange(0.3, (5.0, 30.0), (45.0, 90.0))
    assert cfg.make_scan_range() is None
    with pytest.raises(ValueError, match="unknown key 'scan_range.p'"):
        config_from_dict({"scan_range": {"p": 0.3}})
    with pytest.raises(ValueError, match="ScanRange.probability"):
        config_from_dict({"scan_range": {"probability": 3}})


def test_training_with_partial_scans_records_and_guards_them(tmp_path, data_cache):
    out = run_dir(tmp_path, data_cache)
    scan = {"probability": 1.0, "start_deg": [10.0, 20.0], "end_deg": [40.0, 60.0]}
    cfg = dataclasses.replace(tiny_config(out, max_steps=4), scan_range=scan)
    part = train(cfg, stop_at_step=2, log=lambda m: None)
    assert read_checkpoint(part.last_checkpoint)["config"]["scan_range"] == scan
    with pytest.raises(ValueError, match="cannot resume.*scan_range.probability"):
        train(dataclasses.replace(cfg, scan_range={**scan, "probability": 0.5}), resume=True, log=lambda m: None)
    assert train(cfg, resume=True, log=lambda m: None).step == 4


# ------------------------------------------------------------------ classify
def _write_pattern(path, structure, radiation, two_theta, header=""):
    sim = xf.Simulator(radiation=radiation, two_theta=two_theta, n_points=4000, W=0.04)
    y = np.asarray(sim.pattern(structure))
    np.savetxt(path, np.column_stack([sim.two_theta_deg, 1000 * y + 20]), header=header)
    return sim


def test_classify_cli_shows_indistinguishable_sets(tmp_path, trained, capsys):
    from xrdflow.data import bundled_dataset

    s = bundled_dataset("test", limit=1).structures[0]
    _write_pattern(tmp_path / "p.xy", s, "CuKa", (5, 90))
    assert main(["classify", str(tmp_path / "p.xy"), "--checkpoint", str(trained), "-k", "6",
                 "--wavelength", "CuKa"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"pattern: {tmp_path / 'p.xy'}"
    head = lines.index("crystal system:")
    cs = [re.match(r"\s+(\d)\.\s+([\d.]+) %  (\w+)$", ln) for ln in lines[head + 1:head + 7]]
    assert all(cs) and [int(m.group(1)) for m in cs] == [1, 2, 3, 4, 5, 6]
    assert {m.group(3) for m in cs} <= set(L.CRYSTAL_SYSTEMS)
    p = [float(m.group(2)) for m in cs]
    assert p == sorted(p, reverse=True)
    sg_head = next(i for i, ln in enumerate(lines) if ln.startswith("space group (groups in one set"))
    sets = [ln for ln in lines[sg_head + 1:] if re.match(r"\s+\d\.", ln)]
    assert len(sets) == 6
    multi = [ln for ln in sets if "{" in ln]
    assert multi, out  # with 6 sets of 120, some extinction group with several members shows up
    for ln in multi:
        numbers = [int(n) for n in re.findall(r"\((\d+)\)", ln)]
        assert len(numbers) > 1
        assert len({L.extinction_group(n) for n in numbers}) == 1
        assert sorted(numbers) == sorted(L.extinction_group_members(L.extinction_group(numbers[0])))
    # JSON output, and the API: set probabilities are sums over their members and add up to 1
    assert main(["classify", str(tmp_path / "p.xy"), "--checkpoint", str(trained), "--json"]) == 0
    assert '"space_group_sets"' in capsys.readouterr().out
    model, cfg = load_classifier(trained)
    y, info = pattern_on_grid(xf.io.read_pattern(tmp_path / "p.xy", wavelength="CuKa"), cfg.make_simulator())
    res = classify_patterns(model, y, k=120)[0]
    assert abs(sum(s_["p"] for s_ in res["space_group_sets"]) - 1) < 1e-4
    for s_ in res["space_group_sets"][:5]:
        assert abs(s_["p"] - sum(m[2] for m in s_["members"])) < 1e-5


def test_shipped_classifier_is_the_default(tmp_path, capsys):
    import hashlib
    import json

    from xrdflow import pretrained
    from xrdflow.data import bundled_dataset

    path = pretrained.path("classifier")
    meta = pretrained.provenance("classifier")
    ck = read_checkpoint("pretrained:classifier")
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["command"] == "xrdflow classifier train --config configs/classifier_full.yaml"
    assert meta["step"] == ck["step"] == 7000 and meta["last_val"] == ck["last_val"]
    assert meta["n_train"] == ck["n_train"] == 15592
    # (read back through config_from_dict: a key added since, with its default, is not a difference)
    assert meta["config"] == ck["config"] and config_to_dict(config_from_dict(ck["config"]))["data"] == \
        config_to_dict(load_config(ROOT / "configs" / "classifier_full.yaml"))["data"]
    assert "optimizer" not in ck  # shipped slim (scripts/export_pretrained.py)
    # `xrdflow classify` without --checkpoint uses it: same answer as the API on the shipped file
    s = bundled_dataset("test", limit=1).structures[0]
    _write_pattern(tmp_path / "p.xy", s, "CuKa", (5, 90))
    assert main(["classify", str(tmp_path / "p.xy"), "--wavelength", "CuKa", "-k", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    model, cfg = load_classifier(path)
    y, _ = pattern_on_grid(xf.io.read_pattern(tmp_path / "p.xy", wavelength="CuKa"), cfg.make_simulator())
    want = classify_patterns(model, y, k=3)[0]
    assert [c[0] for c in got["crystal_system"]] == [c[0] for c in want["crystal_system"]]
    assert [c[1] for c in got["crystal_system"]] == pytest.approx([c[1] for c in want["crystal_system"]])


def test_wavelength_conversion_through_d_spacing(tmp_path):
    from xrdflow.data import bundled_dataset
    from xrdflow.io import read_pattern

    s = bundled_dataset("test", limit=3).structures[2]
    model_sim = xf.Simulator(radiation="CuKa1", two_theta=(5, 90), n_points=2048, W=0.04)
    ref = np.asarray(model_sim.pattern(s))
    # the same structure measured with Mo Ka1 (2theta 2-40 deg covers d of the Cu 5-90 deg grid)
    _write_pattern(tmp_path / "mo.xy", s, "MoKa1", (2, 40))
    pat = read_pattern(tmp_path / "mo.xy")
    y, info = pattern_on_grid(pat, model_sim, wavelength="MoKa1")
    assert info["converted"] and info["coverage"] > 0.99
    y = (y - y.min()) / (y.max() - y.min())
    r = (ref - ref.min()) / (ref.max() - ref.min())
    assert np.corrcoef(y, r)[0, 1] > 0.8
    # without conversion (claiming Cu) the lines land in the wrong places
    y_wrong, info_w = pattern_on_grid(pat, model_sim, wavelength="CuKa1")
    assert not info_w["converted"]
    assert np.corrcoef(y_wrong, r)[0, 1] < 0.5
    # no wavelength in the file and none given: the model's is assumed and said so
    _, info_n = pattern_on_grid(pat, model_sim)
    assert info_n["wavelength_assumed"]


def test_bad_input(tmp_path, trained, capsys):
    from types import SimpleNamespace

    sim = xf.Simulator(radiation="CuKa", two_theta=(5, 90), n_points=1024, W=0.04)
    with pytest.raises(ValueError, match="does not overlap"):
        pattern_on_grid(SimpleNamespace(two_theta_deg=np.linspace(100, 120, 50), intensity=np.ones(50),
                                        wavelengths=(1.5406,)), sim)
    with pytest.raises(ValueError, match="strictly increasing"):
        pattern_on_grid(SimpleNamespace(two_theta_deg=np.array([10.0, 9.0, 11.0]), intensity=np.ones(3),
                                        wavelengths=None), sim)
    with pytest.raises(ValueError, match="NaN"):
        pattern_on_grid(SimpleNamespace(two_theta_deg=np.array([10.0, 11.0, 12.0]),
                                        intensity=np.array([1.0, np.nan, 1.0]), wavelengths=None), sim)
    model, _ = load_classifier(trained)
    with pytest.raises(ValueError, match="k must be"):
        classify_patterns(model, np.zeros(1024, dtype=np.float32), k=0)
    with pytest.raises(ValueError, match="1024"):
        classify_patterns(model, np.zeros(1000, dtype=np.float32))
    # command line: one 'xrdflow: error:' line, status 2
    good = tmp_path / "p.xy"
    np.savetxt(good, np.column_stack([np.linspace(5, 90, 500), np.random.default_rng(0).random(500)]))
    torch.save({"format": "something-else", "model": {}}, tmp_path / "other.pt")
    (tmp_path / "junk.xy").write_text("this is not a pattern\n")
    cases = [
        (["classify", str(good), "--checkpoint", str(tmp_path / "missing.pt")], "no such checkpoint"),
        (["classify", str(good), "--checkpoint", str(tmp_path / "other.pt")], "not an xrdflow classifier checkpoint"),
        (["classify", str(tmp_path / "junk.xy"), "--checkpoint", str(trained)], "junk.xy"),
        (["classify", str(good), "--checkpoint", str(trained), "--wavelength", "XyKa"], "unknown radiation"),
        (["classify", str(good), "--checkpoint", str(trained), "-k", "0"], "-k"),
        (["classifier", "train", "--config", str(tmp_path / "nope.yaml")], "no such config file"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err, (argv, err)
