"""Readers for measured patterns (xrdflow.io): every format on small fixtures, the
reference measurements in ../shared/data/experimental, and every error path.

The fixtures in tests/data/io are written by the writers below from one known
pattern (``python tests/test_io.py`` rewrites them); the tests read them back and
compare with the same arrays.
"""
from __future__ import annotations

import gzip
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import xrdflow as xf
from xrdflow.io import MAX_POINTS, MeasuredPattern, PatternFormatError, read_pattern, sniff_format

DATA = Path(__file__).resolve().parent / "data" / "io"
EXPERIMENTAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "experimental"

# ---------------------------------------------------------------- the known pattern
N = 40
TT = np.round(20.0 + 0.05 * np.arange(N), 6)                              # degrees 2-theta
COUNTS = (100 + np.round(900 * np.exp(-(((TT - 21.0) / 0.15) ** 2))) + 5 * (np.arange(N) % 3)).astype(float)
SIGMA = np.round(np.sqrt(COUNTS), 2)
NCTR = np.where(np.arange(N) % 2 == 0, 1, 2)                              # GSAS STD counters
CU = (1.54056, 1.54439)


def write_xy(path):
    lines = ["# NaCl-like test pattern", "# wavelength: 1.5406 A", "2theta intensity"]
    lines += [f"{t:.2f} {c:.0f}" for t, c in zip(TT, COUNTS)]
    Path(path).write_text("\n".join(lines) + "\n")


def write_xye(path):
    lines = ["! three columns, tab separated", "two_theta\tintensity\tesd"]
    lines += [f"{t:.2f}\t{c:.0f}\t{s:.2f}" for t, c, s in zip(TT, COUNTS, SIGMA)]
    Path(path).write_bytes(("\r\n".join(lines) + "\r\n").encode())


def write_semicolon_csv(path):
    lines = ["2Theta;Counts"] + [f"{t:.2f};{c:.0f}".replace(".", ",", 1) for t, c in zip(TT, COUNTS)]
    Path(path).write_text("\n".join(lines) + "\n")


def write_sse(path, per_line=8):
    lines = [f"{TT[0]:g} 0.05 {TT[-1]:g}"]
    for i in range(0, N, per_line):
        lines.append(" ".join(f"{c:.0f}" for c in COUNTS[i:i + per_line]))
    Path(path).write_text("\n".join(lines) + "\n")


STRUCTURE_CIF = """\
_cell_length_a 5.6402
_cell_length_b 5.6402
_cell_length_c 5.6402
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Na1 Na 0 0 0 1
Cl1 Cl 0.5 0.5 0.5 1
"""


def write_cif_with_structure(path):
    rows = "\n".join(f"{t:.2f} {c:.2f}({s * 100:.0f})" for t, c, s in zip(TT, COUNTS, SIGMA))
    text = (f"data_nacl_profile\n{STRUCTURE_CIF}"
            "loop_\n_diffrn_radiation_wavelength_id\n_diffrn_radiation_wavelength\n_diffrn_radiation_wavelength_wt\n"
            f"1 {CU[0]} 1.0\n2 {CU[1]} 0.5\n"
            f"_pd_meas_number_of_points {N}\n"
            "loop_\n_pd_meas_2theta_scan\n_pd_meas_counts_total\n" + rows + "\n")
    Path(path).write_text(text)


def write_cif_two_blocks(path):
    counts = "\n".join(f"{c:.0f}" for c in COUNTS)
    text = (f"data_phase_nacl\n{STRUCTURE_CIF}\n"
            "data_profile\n_diffrn_radiation_type 'Cu K\\a~1~'\n"
            f"_pd_meas_2theta_range_min {TT[0]:.2f}\n_pd_meas_2theta_range_max {TT[-1]:.2f}\n"
            "_pd_meas_2theta_range_inc 0.05\n"
            "loop_\n_pd_meas_counts_total\n" + counts + "\n")
    Path(path).write_text(text)


def write_xrdml(path, *, list_positions=False, intended="K-Alpha 1 and K-Alpha 2", unit="counts", counts=None):
    counts = COUNTS if counts is None else counts
    if list_positions:
        pos = f"<listPositions>{' '.join(f'{t:.2f}' for t in TT)}</listPositions>"
    else:
        pos = f"<startPosition>{TT[0]:.4f}</startPosition>\n        <endPosition>{TT[-1]:.4f}</endPosition>"
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<xrdMeasurements xmlns="http://www.xrdml.com/XRDMeasurement/1.5" status="Completed">
  <xrdMeasurement measurementType="Scan" status="Completed">
    <usedWavelength intended="{intended}">
      <kAlpha1 unit="Angstrom">{CU[0]}</kAlpha1>
      <kAlpha2 unit="Angstrom">{CU[1]}</kAlpha2>
      <kBeta unit="Angstrom">1.39222</kBeta>
      <ratioKAlpha2KAlpha1>0.5000</ratioKAlpha2KAlpha1>
    </usedWavelength>
    <scan appendNumber="0" mode="Continuous" scanAxis="Gonio" status="Completed">
      <dataPoints>
        <positions axis="2Theta" unit="deg">
        {pos}
        </positions>
        <positions axis="Omega" unit="deg">
          <startPosition>10.0</startPosition>
          <endPosition>10.975</endPosition>
        </positions>
        <commonCountingTime unit="seconds">2.00</commonCountingTime>
        <intensities unit="{unit}">{' '.join(f'{c:g}' for c in counts)}</intensities>
      </dataPoints>
    </scan>
  </xrdMeasurement>
</xrdMeasurements>
"""
    Path(path).write_text(text)


def _gsas_records(fields, per_record):
    return [("".join(fields[i:i + per_record])).ljust(80) for i in range(0, len(fields), per_record)]


def write_gsas_std(path):
    fields = [(f"{n:2d}" if i % 4 else "  ") + f"{c:6.0f}" for i, (n, c) in enumerate(zip(NCTR, COUNTS))]
    # a blank NCTR means 1: make the blank fields' counters 1
    recs = _gsas_records(fields, 10)
    lines = ["NaCl-like test pattern, GSAS STD".ljust(80), "Instrument parameter file:lab_cu.prm".ljust(80),
             f"BANK 1 {N} {len(recs)} CONST {TT[0] * 100:.2f} 5.00 0 0 STD".ljust(80)] + recs
    Path(path).write_text("\n".join(lines) + "\n")


def std_sigma():
    nctr = np.where(np.arange(N) % 4 == 0, 1, NCTR)
    return np.sqrt(COUNTS / nctr)


def write_gsas_esd(path):
    fields = [f"{c:8.1f}{s:8.2f}" for c, s in zip(COUNTS, SIGMA)]
    recs = _gsas_records(fields, 5)
    lines = ["NaCl-like test pattern, GSAS ESD, lambda = 1.5406".ljust(80),
             f"BANK 1 {N} {len(recs)} CONST {TT[0] * 100:.2f} 5.00 0 0 ESD".ljust(80)] + recs
    Path(path).write_text("\n".join(lines) + "\n")


def write_fxye(path):
    lines = ["NaCl-like test pattern, FXYE", "# comment line",
             f"BANK 1 {N} {N} CONS {TT[0] * 100:.2f} 5.00 0 0 FXYE"]
    lines += [f"{t * 100:.3f} {c:.1f} {s:.2f}" for t, c, s in zip(TT, COUNTS, SIGMA)]
    Path(path).write_text("\n".join(lines) + "\n")


FIXTURES = {
    "columns.xy": write_xy,
    "columns_esd.xye": write_xye,
    "semicolon_decimal_comma.csv": write_semicolon_csv,
    "start_step_end.dat": write_sse,
    "structure_and_profile.cif": write_cif_with_structure,
    "two_blocks_range.cif": write_cif_two_blocks,
    "scan.xrdml": write_xrdml,
    "std.gsa": write_gsas_std,
    "esd.gsa": write_gsas_esd,
    "points.fxye": write_fxye,
}


def write_fixtures(directory=DATA):
    directory.mkdir(parents=True, exist_ok=True)
    for name, writer in FIXTURES.items():
        writer(directory / name)


# ---------------------------------------------------------------- fixtures read back
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_committed_fixture_is_what_the_writer_makes(name, tmp_path):
    FIXTURES[name](tmp_path / name)
    assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), \
        f"tests/data/io/{name} is stale: run python tests/test_io.py"


# name -> (format, sigma expected, wavelengths, line weights)
EXPECT = {
    "columns.xy": ("text", None, (1.5406,), (1.0,)),
    "columns_esd.xye": ("text", SIGMA, None, None),
    "semicolon_decimal_comma.csv": ("text", None, None, None),
    "start_step_end.dat": ("text", None, None, None),
    "structure_and_profile.cif": ("cif", SIGMA, CU, (1.0, 0.5)),
    "two_blocks_range.cif": ("cif", None, CU[:1], (1.0,)),
    "scan.xrdml": ("xrdml", None, CU, (1.0, 0.5)),
    "std.gsa": ("gsas", std_sigma(), None, None),
    "esd.gsa": ("gsas", SIGMA, (1.5406,), (1.0,)),
    "points.fxye": ("gsas", SIGMA, None, None),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_values(name):
    fmt, sigma, wls, wts = EXPECT[name]
    p = read_pattern(DATA / name)
    assert isinstance(p, MeasuredPattern)
    assert p.metadata["format"] == fmt
    assert p.two_theta_deg.dtype == np.float64 and p.intensity.dtype == np.float64
    np.testing.assert_allclose(p.two_theta_deg, TT, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(p.intensity, COUNTS)
    if sigma is None:
        assert p.sigma is None
    else:
        np.testing.assert_allclose(p.sigma, sigma, rtol=1e-12, atol=1e-12)
    assert p.wavelengths == wls
    assert p.line_weights == wts
    if wls is None:
        assert p.radiation is None
    else:
        assert p.radiation.wavelengths == wls and p.radiation.weights == wts
    assert p.source == str(DATA / name)
    assert p.structure is None or name.endswith(".cif")


@pytest.mark.filterwarnings("ignore:.*ignoring wavelength")
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_write_xy_round_trip(name, tmp_path):
    p = read_pattern(DATA / name, wavelength="CoKa")
    out = tmp_path / "out.xy"
    p.write_xy(out)
    q = read_pattern(out)
    np.testing.assert_array_equal(q.two_theta_deg, p.two_theta_deg)
    np.testing.assert_array_equal(q.intensity, p.intensity)
    if p.sigma is None:
        assert q.sigma is None
    else:
        np.testing.assert_array_equal(q.sigma, p.sigma)
    assert q.radiation.wavelengths == p.radiation.wavelengths
    assert q.radiation.weights == p.radiation.weights
    assert q.wavelengths == p.radiation.wavelengths   # the written file now states them
    assert [f for f in os.listdir(tmp_path) if f != "out.xy"] == []   # no temporary left behind


def test_gzip_and_sniffed_extension(tmp_path):
    for name in ("scan.xrdml", "std.gsa", "structure_and_profile.cif", "start_step_end.dat"):
        raw = (DATA / name).read_bytes()
        gz = tmp_path / (name + ".gz")
        gz.write_bytes(gzip.compress(raw))
        odd = tmp_path / (name.replace(".", "_") + ".unknown")
        odd.write_bytes(raw)
        for path in (gz, odd):
            p = read_pattern(path)
            np.testing.assert_array_equal(p.intensity, COUNTS)
            assert p.metadata["format"] == EXPECT[name][0]


def test_sniff_format():
    assert sniff_format(b"<?xml version='1.0'?><xrdMeasurements/>") == "xrdml"
    assert sniff_format(b"title\nBANK 1 10 1 CONST 1000 5 0 0 ESD\n") == "gsas"
    assert sniff_format(b"# c\ndata_x\n_a 1\n") == "cif"
    assert sniff_format(b"10 20\n11 30\n") == "text"


def test_cif_structure_and_profile():
    p = read_pattern(DATA / "structure_and_profile.cif")
    assert isinstance(p.structure, xf.Structure)
    assert p.structure.n_atoms == 8 and p.structure.formula in ("NaCl", "ClNa", "Na4Cl4", "Cl4Na4")
    assert p.structure.cell_parameters[0] == pytest.approx(5.6402)
    assert p.metadata["structure_block"] == "nacl_profile"
    assert p.radiation.name == "CuKa"
    q = read_pattern(DATA / "two_blocks_range.cif")          # structure in another block of the file
    assert q.structure is not None and q.structure.n_atoms == 8
    assert q.metadata["structure_block"] == "phase_nacl" and q.metadata["block"] == "profile"
    assert q.radiation.name == "CuKa1"


def test_cif_simulated_profile_matches_structure():
    """The structure and the profile that came together agree: a profile simulated
    from the structure, written as pdCIF, reads back to the same numbers."""
    s = xf.Structure.from_cif("data_x\n" + STRUCTURE_CIF)
    sim = xf.Simulator(radiation="CuKa", two_theta=(25.0, 60.0), n_points=1401, normalization="max")
    y = np.round(1e4 * sim.pattern(s).astype(np.float64) + 50.0)
    rows = "\n".join(f"{t:.4f} {c:.0f}" for t, c in zip(sim.two_theta_deg, y))
    path = Path(os.environ.get("TMPDIR", "/tmp"))
    text = (f"data_sim\n{STRUCTURE_CIF}_diffrn_radiation_wavelength 1.54056\n"
            "loop_\n_pd_proc_2theta_corrected\n_pd_proc_intensity_total\n" + rows + "\n")
    f = path / f"xrdflow_io_sim_{os.getpid()}.cif"
    try:
        f.write_text(text)
        p = read_pattern(f)
    finally:
        f.unlink()
    np.testing.assert_allclose(p.two_theta_deg, np.round(sim.two_theta_deg, 4), atol=1e-12)
    np.testing.assert_array_equal(p.intensity, y)
    y2 = np.round(1e4 * sim.pattern(p.structure).astype(np.float64) + 50.0)
    np.testing.assert_array_equal(y2, y)
    assert p.metadata["intensity_tag"] == "_pd_proc_intensity_total"


def test_xrdml_variants(tmp_path):
    f = tmp_path / "a.xrdml"
    write_xrdml(f, list_positions=True, intended="K-Alpha 1")
    p = read_pattern(f)
    np.testing.assert_allclose(p.two_theta_deg, TT, atol=1e-9)
    assert p.wavelengths == (CU[0],) and p.radiation.name == "CuKa1"
    assert p.metadata["counting_time_s"] == 2.0
    write_xrdml(f, unit="counts/s", counts=COUNTS / 2)
    p = read_pattern(f)
    np.testing.assert_allclose(p.intensity, COUNTS)
    assert any("counting time" in n for n in p.metadata["notes"])


def test_text_variants(tmp_path):
    f = tmp_path / "a.txt"
    # start step end with three counts per line and a number-of-points third value
    f.write_text(f"20 0.05 {N}\n" + "\n".join(" ".join(f"{c:.0f}" for c in COUNTS[i:i + 3])
                                                for i in range(0, N, 3)) + "\n")
    with pytest.raises(PatternFormatError, match="401 counts, but the file has 40"):
        read_pattern(f)     # 40 < 180 is read as the end angle, not the point count
    f.write_text("20 0.05 21.95\n" + "\n".join(" ".join(f"{c:.0f}" for c in COUNTS[i:i + 3])
                                              for i in range(0, N, 3)) + "\n")
    np.testing.assert_array_equal(read_pattern(f).intensity, COUNTS)
    big = 200 + 0.01 * np.arange(500)
    f.write_text("5 0.02 500\n" + "\n".join(f"{c:g}" for c in big) + "\n")
    p = read_pattern(f)
    assert len(p) == 500 and p.two_theta_deg[-1] == pytest.approx(5 + 0.02 * 499)
    # decreasing 2-theta is reversed with a note; inline comments and a trailing comma are fine
    f.write_text("\n".join(f"{t:.2f},{c:.0f},  # pt" for t, c in zip(TT[::-1], COUNTS[::-1])) + "\n")
    p = read_pattern(f)
    np.testing.assert_array_equal(p.intensity, COUNTS)
    assert any("reversed" in n for n in p.metadata["notes"])
    # Latin-1 degree sign in a header; wavelength argument used when the file has none
    f.write_bytes("2\xb0theta counts\n".encode("latin-1") + b"".join(
        f"{t:.2f} {c:.0f}\n".encode() for t, c in zip(TT, COUNTS)))
    p = read_pattern(f, wavelength=1.5406)
    assert p.wavelengths is None and p.radiation.wavelengths == (1.5406,)
    assert p.metadata["radiation_from"] == "argument"
    assert any("Latin-1" in n for n in p.metadata["notes"])
    # zero esd replaced by counting statistics, noted
    f.write_text("\n".join(f"{t:.2f} {c:.0f} 0" for t, c in zip(TT, COUNTS)) + "\n")
    p = read_pattern(f)
    np.testing.assert_allclose(p.sigma, np.sqrt(COUNTS))


def test_file_wavelength_wins_with_warning():
    with pytest.warns(UserWarning, match="ignoring wavelength"):
        p = read_pattern(DATA / "scan.xrdml", wavelength="MoKa")
    assert p.radiation.name == "CuKa"
    p = read_pattern(DATA / "scan.xrdml", wavelength="CuKa")  # agrees: no warning
    assert p.metadata["radiation_from"] == "file"


def test_on_grid():
    p = read_pattern(DATA / "columns.xy")
    grid = np.array([19.0, 20.0, 20.025, 21.0, 21.95, 22.0, 25.0])
    values, inside = p.on_grid(grid, return_mask=True)
    np.testing.assert_array_equal(inside, [False, True, True, True, True, False, False])
    assert values[0] == 0 and values[-1] == 0 and values[-2] == 0
    assert values[1] == COUNTS[0] and values[3] == COUNTS[20] and values[4] == COUNTS[-1]
    assert values[2] == pytest.approx(0.5 * (COUNTS[0] + COUNTS[1]))
    assert not np.isnan(values).any()
    np.testing.assert_array_equal(p.on_grid(grid), values)
    sim = xf.Simulator(radiation="CuKa", two_theta=(5.0, 90.0), n_points=4096)
    y = p.on_grid(sim.two_theta_deg)
    assert y.shape == (4096,) and np.isfinite(y).all() and y.max() == pytest.approx(COUNTS.max(), rel=0.2)
    with pytest.raises(ValueError, match="NaN"):
        p.on_grid([20.0, np.nan])
    with pytest.raises(ValueError, match="1-D"):
        p.on_grid(np.zeros((2, 2)))


def test_measured_pattern_constructor_validates():
    p = MeasuredPattern(TT, COUNTS)
    assert p.radiation is None and p.sigma is None and len(p) == N
    assert np.array_equal(p.sigma_or_counting, np.sqrt(COUNTS))
    assert MeasuredPattern(TT, COUNTS, radiation="CuKa").radiation.name == "CuKa"
    with pytest.raises(PatternFormatError, match="negative intensity"):
        MeasuredPattern(TT, -COUNTS)
    with pytest.raises(PatternFormatError, match="same length"):
        MeasuredPattern(TT, COUNTS[:-1])


# ---------------------------------------------------------------- reference measurements
def _experimental_files():
    if not EXPERIMENTAL.is_dir():
        return []
    return sorted(p for p in EXPERIMENTAL.rglob("*") if p.is_file())


# file name -> (points, first 2theta, last 2theta)
KNOWN_PATTERNS = {
    "xrd_measurement_TaCr2O6.dat": (4251, 5.0, 90.0),
    "data.csv": None,            # two xred CSVs of this name, checked below by directory
    "intensity.csv": (5331, 15.00312027, 49.99532362),
}
XRED = {"RuO2": (6000, 30.0, 89.99), "Tb2BaCoO5": (5253, 15.0, 120.04)}


def test_every_experimental_file():
    files = _experimental_files()
    if not files:
        pytest.skip(f"reference data {EXPERIMENTAL} not present (needs ../shared beside the checkout)")
    n_patterns = 0
    for path in files:
        if path.name in KNOWN_PATTERNS:
            expected = KNOWN_PATTERNS[path.name] or XRED[path.parent.name]
            p = read_pattern(path)
            n, first, last = expected
            assert len(p) == n, path
            assert p.two_theta_deg[0] == pytest.approx(first) and p.two_theta_deg[-1] == pytest.approx(last, abs=1e-6)
            assert (p.intensity >= 0).all() and np.all(np.diff(p.two_theta_deg) > 0)
            assert p.radiation is None and p.metadata["notes"] == []
            n_patterns += 1
        else:   # structures, a FullProf control file, licences: refused with a clear message
            with pytest.raises(PatternFormatError) as err:
                read_pattern(path)
            assert str(path) in str(err.value)
            if path.suffix == ".cif":
                assert "Structure.from_cif" in str(err.value)
    assert n_patterns == 4


def test_tacr2o6_start_step_end_with_wavelength():
    path = EXPERIMENTAL / "TaCr2O6" / "xrd_measurement_TaCr2O6.dat"
    if not path.exists():
        pytest.skip(f"reference data {path} not present (needs ../shared beside the checkout)")
    p = read_pattern(path, wavelength="CuKa")
    assert p.metadata["layout"] == "start step end" and p.metadata["step_deg"] == 0.02
    assert p.radiation.wavelengths == CU and p.wavelengths is None
    np.testing.assert_allclose(np.diff(p.two_theta_deg), 0.02, atol=1e-9)
    raw = [float(v) for v in path.read_text().split()[3:]]
    np.testing.assert_array_equal(p.intensity, raw)


# ---------------------------------------------------------------- errors
def _lines(tt=TT, counts=COUNTS, fmt="{:.2f} {:.0f}"):
    return "\n".join(fmt.format(t, c) for t, c in zip(tt, counts)) + "\n"


TEXT_ERRORS = [
    # (content, match, line)
    (_lines().replace("20.10 ", "20.05 ", 1), "repeated", 3),
    (_lines().replace("20.10 ", "19.00 ", 1), "goes back", 3),
    (_lines().replace(" 100\n", " -100\n", 1), "negative intensity", 1),
    (_lines().replace(" 100\n", " nan\n", 1), "not a finite number", 1),
    (_lines().replace(" 105\n", " \n", 1), "1 values on this line but 2", 2),
    (_lines().replace(" 100\n", " \n", 1), "first data line has 1 values", 1),
    (_lines().replace(" 105\n", " 1O5\n", 1), "'1O5' is not a number", 2),
    ("2theta,I\n" + _lines(fmt="{:.2f},{:.0f}").replace(",105\n", ",\n", 1), "missing value", 3),
    ("2theta,I\n" + _lines(fmt="{:.2f},{:.0f}").replace(",105\n", ",,\n", 1), "missing value", 3),
    (_lines(counts=COUNTS)[:60], "at least", None),
    (_lines(tt=TT * 8.5), "outside 0-180", int(np.argmax(TT * 8.5 > 180)) + 1),
    ("a b c d\n" + _lines(fmt="{:.2f} {:.0f} 1 2"), "4 values", 2),
    ("20 0.05 21.95\n" + "\n".join(f"{c:.0f}" for c in COUNTS[:-1]) + "\n", "40 counts, but the file has 39", 1),
    ("20 0 21.95\n" + "\n".join(f"{c:.0f}" for c in COUNTS) + "\n", "step must be a positive", 1),
    ("# only\n# comments\n", "no numeric data", None),
    ("title\n" * 300, "no numeric data in the first", 201),
    ("\n".join(f"{c:.0f}" for c in COUNTS) + "\n", "1 values", 1),
]


def _assert_refused(f, cases):
    """Write each (content, match, line) case to ``f``: read_pattern raises a PatternFormatError
    that matches, names the file and, when ``line`` is given, the 1-based line."""
    for content, match, line in cases:
        f.write_text(content)
        with pytest.raises(PatternFormatError, match=match) as err:
            read_pattern(f)
        assert str(f) in str(err.value)
        if line is not None:
            assert err.value.line == line, (match, str(err.value))


@pytest.mark.parametrize("content,match,line", TEXT_ERRORS)
def test_text_errors_name_file_and_line(tmp_path, content, match, line):
    f = tmp_path / "bad.xy"
    f.write_text(content)
    with pytest.raises(PatternFormatError, match=match) as err:
        read_pattern(f)
    assert isinstance(err.value, ValueError)
    assert str(f) in str(err.value)
    assert err.value.line == line
    if line is not None:
        assert f"line {line}" in str(err.value)


def test_binary_and_size_errors(tmp_path, monkeypatch):
    f = tmp_path / "junk.dat"
    f.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(PatternFormatError, match="binary"):
        read_pattern(f)
    f.write_bytes(b"RAW1.01" + bytes(100))
    with pytest.raises(PatternFormatError, match="Bruker RAW"):
        read_pattern(f)
    f.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(PatternFormatError, match="zip"):
        read_pattern(f, format="xrdml")
    f.write_bytes(b"")
    with pytest.raises(PatternFormatError, match="empty"):
        read_pattern(f)
    f.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(PatternFormatError, match="gzip"):
        read_pattern(f)
    import xrdflow.io._files as files
    import xrdflow.io.pattern as pattern
    import xrdflow.io.text as text

    f.write_text(_lines())
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    with pytest.raises(PatternFormatError, match="MiB limit"):
        read_pattern(f)
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 2**29)
    monkeypatch.setattr(text, "MAX_POINTS", 5)
    with pytest.raises(PatternFormatError, match="more than 5 data points"):
        read_pattern(f)
    monkeypatch.setattr(text, "MAX_POINTS", MAX_POINTS)
    monkeypatch.setattr(pattern, "MAX_POINTS", 20)
    with pytest.raises(PatternFormatError, match="more than the 20"):
        read_pattern(f)


def test_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_pattern(tmp_path / "missing.xy")
    with pytest.raises(IsADirectoryError):
        read_pattern(tmp_path)
    with pytest.raises(TypeError, match="path"):
        read_pattern(b"/x.xy")
    with pytest.raises(ValueError, match="unknown format"):
        read_pattern(DATA / "columns.xy", format="bruker")
    with pytest.raises(ValueError, match="bank= applies to gsas"):
        read_pattern(DATA / "columns.xy", bank=1)
    with pytest.raises(ValueError, match="unknown radiation"):
        read_pattern(DATA / "columns_esd.xye", wavelength="XxKa")


def test_xrdml_errors(tmp_path):
    f = tmp_path / "bad.xrdml"
    good = (DATA / "scan.xrdml").read_text()
    yline = next(i for i, ln in enumerate(good.splitlines(), 1) if "<intensities" in ln)
    cases = [
        (good.replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                      "<?xml version=\"1.0\"?>\n<!DOCTYPE x [<!ENTITY a \"aaaa\">]>"), "DOCTYPE", 2),
        (good.replace("</scan>", ""), "not well-formed", None),
        (good.replace("xrdMeasurements", "other"), "not an XRDML", 1),
        (good.replace("<intensities", "<other").replace("</intensities>", "</other>"), "neither", None),
        (good.replace('axis="2Theta"', 'axis="Chi"'), "only 2-theta", None),
        (good.replace(" 101 ", " 1x1 ", 1) if " 101 " in good else good.replace(" 105 ", " 1x5 ", 1),
         "not a number", yline),
        (good.replace(" 105 ", " -105 ", 1), "negative intensity", yline),
        (good.replace(" 105 ", " NaN ", 1), "not a finite", yline),
        (good.replace("<endPosition>21.9500", "<endPosition>abc"), "not a number", None),
        (good.replace("<scan ", "<scan2 ").replace("</scan>", "</scan2>"), "no <scan>", None),
        (good.replace("</xrdMeasurement>", good[good.index("<scan "):good.index("</scan>") + 7]
                      + "</xrdMeasurement>"), "2 scans", None),
    ]
    _assert_refused(f, cases)
    # a declaration hidden from a byte search by UTF-16 is still refused
    f.write_bytes(cases[0][0].replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>')
                  .encode("utf-16"))
    with pytest.raises(PatternFormatError, match="DOCTYPE") as err:
        read_pattern(f)
    assert err.value.line == 2
    f.write_bytes(good.replace("UTF-8", "UTF-16").encode("utf-16"))
    np.testing.assert_array_equal(read_pattern(f).intensity, COUNTS)
    # several scans: choose one
    f.write_text(cases[-1][0])
    assert len(read_pattern(f, scan=1)) == N
    with pytest.raises(PatternFormatError, match="out of range"):
        read_pattern(f, scan=2)


def test_cif_errors(tmp_path):
    f = tmp_path / "bad.cif"
    good = (DATA / "structure_and_profile.cif").read_text()
    cases = [
        ("data_a\nloop_\n_a\n_b\n1 2 3\n", "not valid CIF", 2),
        ("data_a\n_cell_length_a 5\n", "no powder profile", None),
        (good.replace("_pd_meas_2theta_scan", "_pd_meas_other"), "no 2-theta", None),
        (good.replace("21.00 1010.00(3178)", "21.00 ?"), "not a finite", None),
        (good.replace("21.00 1010.00(3178)", "21.00 -1010.00(3178)"), "negative intensity", None),
        (good + "\ndata_second\n" + good.split("\n", 1)[1], "2 powder-profile blocks",
         None),
        ((DATA / "two_blocks_range.cif").read_text().replace("_range_inc 0.05", "_range_inc 0.07"),
         "imply 29 points", None),
    ]
    _assert_refused(f, cases)
    f.write_text(cases[3][0])
    with pytest.raises(PatternFormatError) as err:
        read_pattern(f)
    assert err.value.line == good.splitlines().index("_pd_meas_counts_total") + 1
    f.write_text(cases[5][0])
    p = read_pattern(f, block="second")
    assert p.metadata["block"] == "second" and p.metadata["structure_block"] == "second"
    with pytest.raises(PatternFormatError, match="no powder-profile block named 'third'"):
        read_pattern(f, block="third")
    # a structure that cannot be read leaves the profile readable, with a warning
    f.write_text(good.replace("Cl1 Cl", "Cl1 Qq"))
    with pytest.warns(UserWarning, match="structure"):
        p = read_pattern(f)
    assert p.structure is None and len(p) == N


def test_gsas_errors(tmp_path):
    f = tmp_path / "bad.gsa"
    std = (DATA / "std.gsa").read_text()
    esd = (DATA / "esd.gsa").read_text()
    fxye = (DATA / "points.fxye").read_text()
    cases = [
        (std.replace(f"BANK 1 {N} ", f"BANK 1 {N + 1} "), "announces 41 points but the bank holds 40", 3),
        (std.replace(f"BANK 1 {N} ", f"BANK 1 {N - 1} "), "data beyond", 7),
        (std.replace("CONST", "TIME_MAP"), "time-of-flight", 3),
        (std.replace(" STD", " XYZ"), "unknown GSAS record type", 3),
        (std.replace("5.00 0 0", "0.00 0 0"), "step", 3),
        (std.replace(f"BANK 1 {N} ", "BANK 1 x "), "not an integer", 3),
        (fxye.replace("2100.000 1010.0", "2100.000 -1010.0"), "negative intensity", 24),
        (fxye.replace("2100.000 1010.0 31.78", "2100.000 1010.0"), "needs", 24),
        (esd.replace("  1010.0", "  10x0.0", 1), "not a number", None),
        (std + std.replace("BANK 1", "BANK 2").split("\n", 2)[2], "2 banks", None),
    ]
    _assert_refused(f, cases)
    f.write_text(cases[-1][0])
    np.testing.assert_array_equal(read_pattern(f, bank=2).intensity, COUNTS)
    with pytest.raises(PatternFormatError, match="no BANK 3"):
        read_pattern(f, bank=3)


def test_zero_counts_sigma_and_parse_su():
    from xrdflow.io.cif_powder import parse_su

    assert parse_su("1234(35)") == (1234.0, 35.0)
    v, s = parse_su("1.54056(2)")
    assert v == 1.54056 and s == pytest.approx(2e-5)
    v, s = parse_su("1.2e3(4)")
    assert v == 1200.0 and s == pytest.approx(400.0)
    assert math.isnan(parse_su("?")[0]) and parse_su("12")[1] is None


if __name__ == "__main__":
    write_fixtures()
    print(f"wrote {len(FIXTURES)} fixtures to {DATA}", file=sys.stderr)
