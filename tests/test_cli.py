"""The ``xrdflow`` command line (``xrdflow simulate``), the bundled examples
and the pattern plot."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import xrdflow as xf
from xrdflow import examples
from xrdflow.cli import main

# One line of PeakTable.to_text: h k l d 2theta I/Imax M
ROW = re.compile(r"^\s*(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s*$")


def table_rows(text: str) -> dict[tuple[int, int, int], tuple[float, float, float, int]]:
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            h, k, l, d, tt, rel, mult = m.groups()
            rows[(int(h), int(k), int(l))] = (float(d), float(tt), float(rel), int(mult))
    return rows


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------- examples
def test_examples_are_listed_and_load():
    assert examples.names() == ["NaCl", "RuO2", "Si"]
    expected = {"NaCl": (225, 8), "Si": (227, 8), "RuO2": (136, 6)}
    for name in examples.names():
        path = examples.path(name)
        assert path.is_file() and path.suffix == ".cif"
        s = xf.Structure.from_cif(path)
        number, _ = xf.space_group(s)
        assert (number, s.n_atoms) == expected[name]
    assert examples.path("nacl") == examples.path("NaCl.cif") == examples.path("NaCl")
    with pytest.raises(ValueError, match="available: NaCl, RuO2, Si"):
        examples.path("NotAThing")
    assert (examples.path("RuO2").parent / "LICENSE-xred.txt").is_file()
    assert "LICENSE-xred.txt" in (examples.path("RuO2").parent / "README.md").read_text()


def test_example_structures_have_the_stated_contents():
    nacl = xf.Structure.from_cif(examples.path("NaCl"))
    assert nacl.cell_parameters[0] == pytest.approx(5.6402)
    assert sorted(set(nacl.species)) == ["Cl-", "Na+"]
    assert np.all(nacl.b_iso > 0)
    si = xf.Structure.from_cif(examples.path("Si"))
    assert si.cell_parameters[0] == pytest.approx(5.43102)
    # Origin choice 2: 8a at (1/8, 1/8, 1/8) and its images; every Si has 4 neighbours at a sqrt(3)/4.
    cart = si.frac @ si.lattice
    diff = si.frac[:, None] - si.frac[None]
    diff -= np.round(diff)
    dist = np.linalg.norm(diff @ si.lattice, axis=-1)
    nn = 5.43102 * np.sqrt(3) / 4
    assert np.all(np.sum(np.isclose(dist, nn, atol=1e-3), axis=1) == 4), cart


# ------------------------------------------------------------------ simulate
def test_simulate_example_prints_header_and_table(capsys):
    code, out, err = run(capsys, "simulate", "--example", "NaCl")
    assert code == 0, err
    assert "Fm-3m" in out and "225" in out
    assert "5.64020" in out
    assert "1.54056" in out and "1.54439" in out
    rows = table_rows(out)
    d, two_theta, rel, mult = rows[(2, 0, 0)]
    assert two_theta == pytest.approx(31.70, abs=0.02)
    assert rel == pytest.approx(100.0)
    assert mult == 6
    assert rows[(2, 2, 0)][1] == pytest.approx(45.45, abs=0.02)
    assert (1, 0, 0) not in rows  # F-centring
    assert len(rows) == 9  # 111 200 220 311 222 400 331 420 422 up to 90 deg


def test_top_limits_the_table_to_the_strongest_lines(capsys):
    code, out, _ = run(capsys, "simulate", "--example", "NaCl", "--top", "2")
    assert code == 0
    assert set(table_rows(out)) == {(2, 0, 0), (2, 2, 0)}


def test_lines_of_zero_intensity_are_not_listed(capsys):
    code, out, _ = run(capsys, "simulate", "--example", "Si", "--two-theta", "20", "80")
    assert code == 0
    rows = table_rows(out)
    assert (2, 2, 2) not in rows  # allowed in Fd-3m, zero for atoms on 8a
    assert rows[(1, 1, 1)][1] == pytest.approx(28.44, abs=0.02)
    assert "1 allowed by the space group but of zero intensity" in out


def test_bare_example_name_as_file_argument(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "simulate", "RuO2", "--top", "1")
    assert code == 0
    assert list(table_rows(out)) == [(1, 1, 0)]


def test_cif_file_argument(capsys, tmp_path):
    path = tmp_path / "my salt.cif"
    path.write_text(examples.path("NaCl").read_text())
    code, out, _ = run(capsys, "simulate", str(path), "--radiation", "CuKa1", "--top", "1")
    assert code == 0
    assert str(path) in out
    assert "1.54439" not in out  # single line
    assert table_rows(out)[(2, 0, 0)][1] == pytest.approx(31.70, abs=0.02)


def test_several_blocks_need_block(capsys, tmp_path):
    text = examples.path("NaCl").read_text()
    path = tmp_path / "two.cif"
    path.write_text(text + "\n" + text.replace("data_NaCl", "data_NaCl_copy").replace("5.6402", "5.7000"))
    code, _, err = run(capsys, "simulate", str(path))
    assert code == 2 and "--block NAME" in err and "Traceback" not in err
    code, out, _ = run(capsys, "simulate", str(path), "--block", "NaCl_copy", "--top", "1")
    assert code == 0 and "5.70000" in out


def test_xy_output(capsys, tmp_path):
    out_path = tmp_path / "NaCl.xy"
    code, _, err = run(capsys, "simulate", "--example", "NaCl", "--n-points", "2048", "-o", str(out_path))
    assert code == 0, err
    data = np.loadtxt(out_path)
    assert data.shape == (2048, 2)
    np.testing.assert_allclose(data[:, 0], np.linspace(5, 90, 2048), atol=6e-5)
    assert data[:, 1].max() == pytest.approx(1.0, rel=1e-5)
    assert 31.5 < data[np.argmax(data[:, 1]), 0] < 31.9
    header = [line for line in out_path.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "CuKa" in text and "1.54056" in text and "1.54439" in text
    assert "2theta (degrees)" in text and "normalization: max" in text
    assert os.listdir(tmp_path) == ["NaCl.xy"]


def test_xy_output_with_step_and_wavelength(capsys, tmp_path):
    out_path = tmp_path / "mo.xy"
    code, _, err = run(capsys, "simulate", "--example", "Si", "--wavelength", "0.7093", "--two-theta", "10", "40",
                       "--step", "0.01", "--normalization", "area", "-o", str(out_path))
    assert code == 0, err
    data = np.loadtxt(out_path)
    assert data.shape == (3001, 2)
    x, y = data[:, 0], data[:, 1]
    assert np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) == pytest.approx(1.0, rel=1e-2)  # unit area
    assert "0.7093" in out_path.read_text().splitlines()[4]


def test_plot_output(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "NaCl.png"
    xy = tmp_path / "NaCl.xy"
    code, out, err = run(capsys, "simulate", "--example", "NaCl", "-o", str(xy), "--plot", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["NaCl.png", "NaCl.xy"]  # no temporary files left
    assert f"wrote {png}" in out


def test_outputs_overwrite_atomically(capsys, tmp_path):
    out_path = tmp_path / "p.xy"
    out_path.write_text("old\n")
    os.chmod(out_path, 0o640)
    code, _, _ = run(capsys, "simulate", "--example", "NaCl", "--n-points", "100", "-o", str(out_path))
    assert code == 0
    assert np.loadtxt(out_path).shape == (100, 2)
    assert os.stat(out_path).st_mode & 0o777 == 0o640  # the file keeps its permissions
    assert os.listdir(tmp_path) == ["p.xy"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(capsys, tmp_path, monkeypatch):
    out_path = tmp_path / "p.xy"
    out_path.write_text("old\n")

    def disk_full(fname, *args, **kwargs):
        with open(fname, "w") as fh:
            fh.write("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savetxt", disk_full)
    code, _, err = run(capsys, "simulate", "--example", "NaCl", "-o", str(out_path))
    assert code == 2
    assert err.startswith("xrdflow: error:") and "No space left on device" in err
    assert out_path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["p.xy"]


def test_python_dash_m_in_a_subprocess(tmp_path):
    out_path = tmp_path / "NaCl.xy"
    proc = subprocess.run([sys.executable, "-m", "xrdflow", "simulate", "--example", "NaCl", "-o", str(out_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert table_rows(proc.stdout)[(2, 0, 0)][1] == pytest.approx(31.70, abs=0.02)
    assert np.loadtxt(out_path).shape == (4096, 2)
    assert os.listdir(tmp_path) == ["NaCl.xy"]

    bad = subprocess.run([sys.executable, "-m", "xrdflow", "simulate", str(tmp_path / "missing.cif")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("xrdflow: error:") and "missing.cif" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_help_lists_the_examples(capsys):
    code, out, _ = run(capsys, "simulate", "--help")
    assert code == 0
    for name in examples.names():
        assert re.search(rf"^\s+{name}\s", out, re.M), name
    code, out, _ = run(capsys, "--version")
    assert code == 0 and xf.__version__ in out


# ------------------------------------------------------------------- errors
@pytest.fixture
def malformed_cif(tmp_path):
    path = tmp_path / "broken.cif"
    path.write_text("this is not a CIF file {\n")
    return path


@pytest.mark.parametrize("argv, message", [
    (["simulate", "{tmp}/missing.cif"], "no such file"),
    (["simulate", "{malformed}"], "could not parse"),
    (["simulate", "--example", "NaCl", "--two-theta", "90", "5"], "START < STOP"),
    (["simulate", "--example", "NaCl", "--two-theta", "5", "200"], "two_theta"),
    (["simulate", "--example", "Unobtainium"], "unknown example"),
    (["simulate", "--example", "NaCl", "--radiation", "XyKa"], "unknown radiation"),
    (["simulate", "--example", "NaCl", "--wavelength", "-1"], "wavelength"),
    (["simulate", "--example", "NaCl", "--neutron"], "--wavelength"),
    (["simulate", "--example", "NaCl", "--step", "0"], "step"),
    (["simulate", "--example", "NaCl", "--block", "nope"], "no data block named 'nope'"),
    (["simulate", "--example", "NaCl", "-o", "{tmp}/no/such/dir/out.xy"], "does not exist"),
    (["simulate", "--example", "NaCl", "-o", "{tmp}"], "is a directory"),
    (["simulate", "{tmp}"], "is a directory"),
    (["simulate"], "give a CIF file"),
    (["simulate", "--example", "NaCl", "--n-points", "10", "--step", "0.1"], "not allowed with"),
    (["simulate", "--example", "NaCl", "--top", "0"], "positive integer"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line_and_no_traceback(capsys, tmp_path, malformed_cif, argv, message):
    argv = [a.format(tmp=tmp_path, malformed=malformed_cif) for a in argv]
    before = sorted(os.listdir(tmp_path))
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err + out
    last = err.strip().splitlines()[-1]
    assert last.startswith("xrdflow: error:"), err
    assert message in last
    assert sorted(os.listdir(tmp_path)) == before  # nothing written on error


def test_plot_with_bad_extension_fails_before_writing_anything(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    xy = tmp_path / "p.xy"
    code, _, err = run(capsys, "simulate", "--example", "NaCl", "-o", str(xy), "--plot", str(tmp_path / "p.nope"))
    assert code == 2 and "cannot save a plot as '.nope'" in err
    assert os.listdir(tmp_path) == []


def test_missing_matplotlib_is_a_clear_error(capsys, tmp_path, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    from xrdflow.plot import plot_pattern

    with pytest.raises(ImportError, match=r"pip install xrdflow\[plot\]"):
        plot_pattern([0.0, 1.0], [0.0, 1.0])
    code, _, err = run(capsys, "simulate", "--example", "NaCl", "--plot", str(tmp_path / "p.png"))
    assert code == 2
    assert "pip install xrdflow[plot]" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------- plot
def test_plot_pattern_returns_a_figure_with_ticks_and_labels(tmp_path):
    pytest.importorskip("matplotlib")
    from xrdflow.plot import plot_pattern

    s = xf.Structure.from_cif(examples.path("NaCl"))
    sim = xf.Simulator("CuKa", (5, 90), 4096)
    peaks = sim.peaks(s)
    path = tmp_path / "p.svg"
    fig = plot_pattern(sim.two_theta_deg, sim.pattern(s), peaks, title="NaCl", label_top=3, path=path)
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["(200)", "(220)", "(222)"]
    assert ax.get_ylabel() == "Intensity (normalized)"
    assert ax.get_title() == "NaCl"
    assert path.read_text().lstrip().startswith("<?xml")
    assert os.listdir(tmp_path) == ["p.svg"]
    # Labels do not overlap each other.
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    for i in range(len(boxes)):
        for j in range(i):
            assert not boxes[i].overlaps(boxes[j])


def test_hkl_label():
    from xrdflow.plot import hkl_label

    assert hkl_label((2, 0, 0)) == "(200)"
    assert hkl_label((1, 0, 10)) == "(1 0 10)"
    assert hkl_label((1, -1, 0)) == r"$(1\bar{1}0)$"
