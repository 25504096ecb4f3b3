"""Bad input raises a clear ValueError/TypeError; nothing crashes or hangs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xrdflow as xf
from xrdflow import _core


def nacl() -> xf.Structure:
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    return xf.Structure.from_arrays((5.64, 5.64, 5.64, 90, 90, 90), np.vstack([fcc, fcc + .5]) % 1,
                                    ["Na"] * 4 + ["Cl"] * 4)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(radiation=-1.5), ValueError, "positive"),
    (dict(radiation=0.0), ValueError, "positive"),
    (dict(radiation=float("nan")), ValueError, "positive"),
    (dict(radiation=1540.0), ValueError, "angstrom"),
    (dict(radiation="XxKa"), ValueError, "unknown radiation"),
    (dict(radiation=[1.5]), TypeError, "radiation"),
    (dict(two_theta=(90, 5)), ValueError, "start < stop"),
    (dict(two_theta=(5, 180)), ValueError, "180"),
    (dict(two_theta=(-5, 60)), ValueError, "0 < start"),
    (dict(two_theta=(5, float("inf"))), ValueError, "finite"),
    (dict(n_points=1), ValueError, "n_points"),
    (dict(n_points=10 ** 9), ValueError, "n_points"),
    (dict(n_points=100.5), TypeError, "integer"),
    (dict(n_points=100, step=0.1), ValueError, "not both"),
    (dict(step=-0.02), ValueError, "step"),
    (dict(q=(1.0, 9.0)), ValueError, "reach"),
    (dict(q=(2.0, 1.0)), ValueError, "start < stop"),
    (dict(probe="electron"), ValueError, "probe"),
    (dict(probe="neutron", anomalous=True), ValueError, "X-rays only"),
    (dict(normalization="sum"), ValueError, "normalization"),
    (dict(U=0, V=0, W=0), ValueError, "zero or negative width"),
    (dict(W=float("nan")), ValueError, "finite"),
    (dict(crystallite_size_nm=-3), ValueError, "crystallite_size_nm"),
    (dict(microstrain=-1e-3), ValueError, "microstrain"),
    (dict(monochromator_two_theta_deg=200), ValueError, "monochromator"),
    (dict(symprec=0), ValueError, "symprec"),
    (dict(max_reflections=0), ValueError, "max_reflections"),
    (dict(cutoff_rel=2.0), ValueError, "cutoff_rel"),
])
def test_simulator_rejects(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        xf.Simulator(**kwargs)


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True])
def test_bad_thread_counts(threads):
    with pytest.raises(ValueError, match="threads"):
        xf.Simulator().patterns([nacl()], threads=threads)


def test_wrong_object_types():
    sim = xf.Simulator()
    with pytest.raises(TypeError, match="Structure"):
        sim.pattern("NaCl.cif")
    with pytest.raises(TypeError, match="list"):
        sim.reflections(nacl())
    with pytest.raises(TypeError, match="Reflections"):
        sim.render(np.zeros(3))


def test_reflection_cap_names_cap_before_allocating():
    a = 60.0  # a 60 A cubic cell to 170 deg with Mo K-alpha: ~1e7 hkl
    big = xf.Structure.from_arrays((a, a, a, 90, 90, 90), [[0.1, 0.2, 0.3]], ["C"])
    sim = xf.Simulator("MoKa", two_theta=(5, 170), n_points=100_000, max_reflections=1_000_000)
    with pytest.raises(ValueError, match=r"max_reflections=1,000,000"):
        sim.pattern(big)


def test_core_cap_guard():
    """The C++ driver checks the search box too, with a message naming the cap."""
    args = _valid_core_args()
    with pytest.raises(xf.CoreError, match="exceeds the cap"):
        _core.compute_reflections(args, d_min=0.05, max_box=1000.0)


def test_core_error_is_value_error():
    assert issubclass(xf.CoreError, ValueError)


def _valid_core_args():
    lattice = np.eye(3)[None] * 4.0
    return dict(lattice=np.ascontiguousarray(lattice), atom_offsets=np.array([0, 1], np.int64),
                frac=np.zeros((1, 3)), atom_type=np.zeros(1, np.int32), occupancy=np.ones(1), b_iso=np.zeros(1),
                type_offsets=np.array([0, 1], np.int64), it92=np.ones((1, 9)), fp=np.zeros(1), fpp=np.zeros(1),
                neutron_b=np.zeros(1), op_offsets=np.array([0, 1], np.int64),
                rotations=np.eye(3, dtype=np.int32)[None].copy(), translations=np.zeros((1, 3)))


def test_core_validates_offsets_types_and_rotations():
    base = _valid_core_args()
    cases = [
        (dict(atom_offsets=np.array([0, 2], np.int64)), "atom offsets end"),
        (dict(atom_type=np.array([3], np.int32)), "scatterer type"),
        (dict(occupancy=np.array([1.5])), "occupancy"),
        (dict(b_iso=np.array([-1.0])), "B_iso"),
        (dict(frac=np.full((1, 3), np.nan)), "non-finite"),
        (dict(lattice=np.zeros((1, 3, 3))), "degenerate"),
        (dict(rotations=np.full((1, 3, 3), 2, np.int32)), "determinant"),
        (dict(rotations=np.array([[[1, 100, 0], [0, 1, 0], [0, 0, 1]]], np.int32)), "outside"),
    ]
    for change, match in cases:
        with pytest.raises(ValueError, match=match):
            _core.compute_reflections({**base, **change}, d_min=1.0)
    no_ops = dict(op_offsets=np.array([0, 0], np.int64), rotations=np.zeros((0, 3, 3), np.int32),
                  translations=np.zeros((0, 3)))
    with pytest.raises(ValueError, match="no symmetry operations and symprec"):
        _core.compute_reflections({**base, **no_ops}, d_min=1.0, symprec=0.0)
    with pytest.raises(TypeError, match="dtype"):
        _core.compute_reflections({**base, "frac": np.zeros((1, 3), np.float32)}, d_min=1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.compute_reflections({**base, "frac": np.zeros((3, 2)).T}, d_min=1.0)
    with pytest.raises(TypeError, match="numpy array"):
        _core.compute_reflections({**base, "frac": [[0.0, 0.0, 0.0]]}, d_min=1.0)
    # A non-group set of rotations (a 4-fold without its powers) is refused.
    rot4 = np.array([[[0, -1, 0], [1, 0, 0], [0, 0, 1]], [[1, 0, 0], [0, 1, 0], [0, 0, 1]]], np.int32)
    with pytest.raises(ValueError, match="group"):
        _core.compute_reflections({**base, "op_offsets": np.array([0, 2], np.int64), "rotations": rot4,
                                   "translations": np.zeros((2, 3))}, d_min=1.0)


# ------------------------------------------------------------------- fuzz

def _arrays(draw, shape_max=4):
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int32, np.int64]))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(0, shape_max)) for _ in range(ndim))
    values = draw(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                                     st.integers(-5, 5)), min_size=1, max_size=8))
    with np.errstate(all="ignore"):
        return np.resize(np.array(values, dtype=np.float64), shape).astype(dtype)


@st.composite
def core_arguments(draw):
    args = _valid_core_args()
    for name in draw(st.lists(st.sampled_from(sorted(args)), min_size=1, max_size=4, unique=True)):
        args[name] = _arrays(draw)
    return args, draw(st.one_of(st.floats(min_value=-1, max_value=5), st.just(float("nan"))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(core_arguments())
def test_fuzz_compute_reflections(case):
    args, d_min = case
    try:
        out = _core.compute_reflections(args, d_min=d_min, max_box=1e6)
    except (TypeError, ValueError):
        return
    assert out["offsets"][-1] == len(out["d"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(core_arguments())
def test_fuzz_simulate_patterns(case):
    """The fused path (structures straight to patterns) validates the same way."""
    args, d_min = case
    instrument = dict(wavelengths=np.array([1.54]), line_weights=np.array([1.0]),
                      grid_two_theta=np.linspace(10, 80, 50), axis=np.linspace(10, 80, 50), U=0.0, V=0.0, W=0.01,
                      X=0.0, Y=0.0, size_angstrom=0.0, scherrer_k=0.9, microstrain=0.0, zero_shift_deg=0.0,
                      cos2_2theta_m=1.0, neutron=False, normalization=1, cutoff_rel=1e-3)
    try:
        y = _core.simulate_patterns(args, d_min=d_min, neutron=False, max_box=1e6, symprec=1e-3,
                                    instrument=instrument)
    except (TypeError, ValueError):
        return
    assert y.shape == (len(args["lattice"]), 50)


@st.composite
def render_arguments(draw):
    args = dict(offsets=np.array([0, 2], np.int64), d=np.array([2.0, 1.5]), F2=np.array([10.0, 5.0]),
                multiplicity=np.array([6, 8], np.int32), wavelengths=np.array([1.54]), line_weights=np.array([1.0]),
                grid_two_theta=np.linspace(10, 80, 50), axis=np.linspace(10, 80, 50))
    for name in draw(st.lists(st.sampled_from(sorted(args)), min_size=1, max_size=3, unique=True)):
        args[name] = _arrays(draw, shape_max=60)
    instrument = {k: draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
                  for k in ("U", "V", "W", "X", "Y", "size_angstrom", "microstrain", "zero_shift_deg")}
    instrument.update(scherrer_k=0.9, cos2_2theta_m=1.0, neutron=False, normalization=1, cutoff_rel=1e-3)
    for name in ("wavelengths", "line_weights", "grid_two_theta", "axis"):
        instrument[name] = args.pop(name)
    if draw(st.booleans()):  # a wrong type or a missing entry
        key = draw(st.sampled_from(sorted(instrument)))
        if draw(st.booleans()):
            del instrument[key]
        else:
            instrument[key] = "1.0"
    return args, instrument


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(render_arguments())
def test_fuzz_render(case):
    args, instrument = case
    try:
        y = _core.render_patterns(**args, instrument=instrument)
    except (TypeError, ValueError):
        return
    assert y.dtype == np.float32 and y.ndim == 2
