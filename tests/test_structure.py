"""Tests for xrdflow.structure: constructors, CIF reading, validation."""

import csv
import gzip
import math
import pickle
import warnings
from pathlib import Path

import gemmi
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from xrdflow.structure import Structure, StructureError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MP20_TEST = DATA / "structures" / "mp20_biternary_test.csv.gz"
XRED = DATA / "experimental" / "xred"

B_PER_U = 8 * math.pi**2

CELL_TAGS = "_cell_length_a {a}\n_cell_length_b {b}\n_cell_length_c {c}\n" \
            "_cell_angle_alpha {al}\n_cell_angle_beta {be}\n_cell_angle_gamma {ga}\n"


def cif_block(name, cell, sites, columns=("label", "type_symbol", "fract_x", "fract_y", "fract_z"),
              extra=""):
    """CIF text of one block; sites are rows of values for the _atom_site_ columns."""
    a, b, c, al, be, ga = cell
    head = f"data_{name}\n" + CELL_TAGS.format(a=a, b=b, c=c, al=al, be=be, ga=ga) + extra
    loop = "loop_\n" + "".join(f"_atom_site_{col}\n" for col in columns)
    rows = "".join(" ".join(str(v) for v in row) + "\n" for row in sites)
    return head + loop + rows


NACL_CIF = cif_block(
    "NaCl", (5.64, 5.64, 5.64, 90, 90, 90),
    [("Na1", "Na", 0, 0, 0), ("Cl1", "Cl", 0.5, 0.5, 0.5)],
    extra="_symmetry_space_group_name_H-M 'F m -3 m'\n"
          "loop_\n_atom_type_symbol\n_atom_type_oxidation_number\nNa 1\nCl -1\n",
)
NA_POSITIONS = {(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)}
CL_POSITIONS = {(0.5, 0.5, 0.5), (0.5, 0, 0), (0, 0.5, 0), (0, 0, 0.5)}


def positions_of(structure, z):
    return {tuple(np.round(f, 6) + 0.0) for f in structure.frac[structure.numbers == z]}


def pymatgen_from_cif_text(text):
    """pymatgen Structure, without its snapping of coordinates near simple fractions."""
    mg = pytest.importorskip("pymatgen.core")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mg.Structure.from_str(text, "cif", frac_tolerance=0.0)


def assert_same_atoms(s1, s2, tol):
    """Every atom of s1 has an atom of s2 with the same Z and occupancy within tol (mod 1)."""
    assert len(s1) == len(s2)
    used = set()
    for f, z, occ in zip(s1.frac, s1.numbers, s1.occupancy):
        d = s2.frac - f
        d -= np.round(d)
        dist = np.abs(d).max(axis=1)
        dist[(s2.numbers != z) | (np.abs(s2.occupancy - occ) > 1e-9)] = np.inf
        j = int(np.argmin(dist))
        assert dist[j] < tol and j not in used
        used.add(j)


# --------------------------------------------------------------------------- from_arrays


def test_from_arrays_symbols_ions_numbers():
    species = ["Fe", "fe3+", "O2-", 8, "Fe+3", "Cl-", "Na+", "FE", np.int64(29), "O-2"]
    frac = np.linspace(-0.3, 1.2, 30).reshape(10, 3)
    s = Structure.from_arrays(np.eye(3) * 4.0, frac, species, label="mix")
    assert s.numbers.tolist() == [26, 26, 8, 8, 26, 17, 11, 26, 29, 8]
    assert s.charges.tolist() == [0, 3, -2, 0, 3, -1, 1, 0, 0, -2]
    assert s.species == ["Fe", "Fe3+", "O2-", "O", "Fe3+", "Cl-", "Na+", "Fe", "Cu", "O2-"]
    np.testing.assert_allclose(s.frac, np.mod(frac, 1.0), atol=1e-15)
    assert s.occupancy.tolist() == [1.0] * 10 and s.b_iso.tolist() == [0.0] * 10
    assert s.label == "mix" and len(s) == s.n_atoms == 10
    for name, dtype in [("lattice", np.float64), ("frac", np.float64), ("numbers", np.int32),
                        ("charges", np.int32), ("occupancy", np.float64), ("b_iso", np.float64)]:
        arr = getattr(s, name)
        assert arr.dtype == dtype and arr.flags.c_contiguous and not arr.flags.writeable


def test_explicit_charges_override_symbols():
    s = Structure.from_arrays(np.eye(3) * 3, [[0, 0, 0], [0.5, 0.5, 0.5]], ["Fe3+", "O"],
                              charges=[2, -2])
    assert s.charges.tolist() == [2, -2]
    assert s.species == ["Fe2+", "O2-"]


def test_coordinates_wrap_into_unit_interval():
    s = Structure.from_arrays(np.eye(3) * 3, [[-1e-17, 1.0, -0.25], [2.5, -3.0, 0.999]], [1, 1])
    assert np.all(s.frac >= 0) and np.all(s.frac < 1)
    np.testing.assert_allclose(s.frac, [[0, 0, 0.75], [0.5, 0, 0.999]], atol=1e-15)


def test_u_iso_converted_to_b_iso():
    u = np.array([0.01, 0.025, 0.0])
    s = Structure.from_arrays(np.eye(3) * 5, np.zeros((3, 3)), ["Na", "Cl", "K"], u_iso=u)
    np.testing.assert_array_equal(s.b_iso, 8 * np.pi**2 * u)
    scalar = Structure.from_arrays(np.eye(3) * 5, np.zeros((2, 3)), ["Na", "Cl"], u_iso=0.01)
    np.testing.assert_array_equal(scalar.b_iso, [B_PER_U * 0.01] * 2)


def test_b_iso_and_u_iso_together_rejected():
    with pytest.raises(StructureError, match="not both"):
        Structure.from_arrays(np.eye(3) * 5, [[0, 0, 0]], ["Na"], b_iso=1.0, u_iso=0.01)


def test_cell_parameters_give_same_volume_as_matrix():
    a, b, c, beta = 5.0, 6.0, 7.0, 100.0
    expected = a * b * c * math.sin(math.radians(beta))  # monoclinic: V = a b c sin(beta)
    rad = math.radians(beta)
    matrix = [[a, 0, 0], [0, b, 0], [c * math.cos(rad), 0, c * math.sin(rad)]]
    from_matrix = Structure.from_arrays(matrix, [[0, 0, 0]], ["Si"])
    from_params = Structure.from_arrays((a, b, c, 90, beta, 90), [[0, 0, 0]], ["Si"])
    assert from_matrix.volume == pytest.approx(expected, rel=1e-12)
    assert from_params.volume == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(from_params.cell_parameters, (a, b, c, 90, beta, 90), rtol=1e-12)
    np.testing.assert_allclose(from_matrix.cell_parameters, (a, b, c, 90, beta, 90), rtol=1e-12)


def test_cell_parameter_orientation_matches_gemmi():
    params = (5.0, 6.0, 7.0, 80.0, 100.0, 110.0)
    s = Structure.from_arrays(params, [[0.1, 0.2, 0.3]], ["C"])
    np.testing.assert_allclose(s.lattice, np.array(gemmi.UnitCell(*params).orth.mat).T,
                               atol=1e-12)
    assert s.lattice[0, 1] == s.lattice[0, 2] == s.lattice[1, 2] == 0.0  # a along x, b in xy
    assert s.volume == pytest.approx(gemmi.UnitCell(*params).volume, rel=1e-12)


def test_formula_repr_and_species_of_partial_occupancy():
    s = Structure.from_arrays(np.eye(3) * 4, [[0, 0, 0]] * 3 + [[0.5, 0.5, 0.5]],
                              ["Fe", "Co", "Ni", "O"], occupancy=[0.5, 0.25, 0.25, 1.0],
                              label="x")
    assert s.formula == "Co0.25Fe0.5Ni0.25O"
    assert "Co0.25Fe0.5Ni0.25O" in repr(s) and "n_atoms=4" in repr(s) and "'x'" in repr(s)
    hill = Structure.from_arrays(np.eye(3) * 4, np.zeros((4, 3)), ["O", "H", "C", "C"])
    assert hill.formula == "C2HO"


def test_with_b_iso_returns_new_structure():
    s = Structure.from_arrays(np.eye(3) * 4, np.zeros((2, 3)), ["Na", "Cl"], b_iso=[0.3, 0.4])
    t = s.with_b_iso(1.5)
    u = s.with_b_iso([0.1, 0.2])
    assert t.b_iso.tolist() == [1.5, 1.5] and u.b_iso.tolist() == [0.1, 0.2]
    assert s.b_iso.tolist() == [0.3, 0.4]
    assert not t.b_iso.flags.writeable
    with pytest.raises(StructureError, match="negative"):
        s.with_b_iso(-1.0)


def test_structure_is_immutable_and_picklable():
    s = Structure.from_arrays((4, 5, 6, 90, 95, 90), [[0.1, 0.2, 0.3]], ["Fe2+"], b_iso=0.7,
                              label="p")
    with pytest.raises(AttributeError, match="immutable"):
        s.label = "q"
    with pytest.raises(ValueError):
        s.frac[0, 0] = 0.5
    r = pickle.loads(pickle.dumps(s))
    for name in ("lattice", "frac", "numbers", "charges", "occupancy", "b_iso"):
        np.testing.assert_array_equal(getattr(r, name), getattr(s, name))
    assert r.label == "p" and r.species == ["Fe2+"]


# --------------------------------------------------------------------------- validation

GOOD = dict(lattice=np.eye(3) * 4.0, frac=[[0, 0, 0], [0.5, 0.5, 0.5]], species=["Na", "Cl"])


@pytest.mark.parametrize("changes, match", [
    (dict(species=["Na", "Xx"]), r"unknown element 'Xx' at atom 1"),
    (dict(species=["Na", "Cl2"]), r"unknown element 'Cl2'"),
    (dict(species=[11, 0]), r"unknown element.*atomic number 0 at atom 1"),
    (dict(species=[11, 119]), r"unknown element.*119"),
    (dict(species=[11, 10**30]), r"unknown element.*atomic number 10+ at atom 1"),
    (dict(lattice=np.eye(2)), r"shape \(2, 2\)"),
    (dict(lattice=[1, 2, 3]), r"shape \(3,\)"),
    (dict(lattice=[[4, 0, 0], [0, 4, 0], [0, 0, np.nan]]), r"NaN"),
    (dict(lattice=[4, 4, np.inf, 90, 90, 90]), r"NaN or infinite"),
    (dict(lattice=[[4, 0, 0], [0, 4, 0], [4, 4, 0]]), r"degenerate"),
    (dict(lattice=[[4, 0, 0], [0, 4, 0], [4, 4, 1e-6]]), r"coplanar"),
    (dict(lattice=[[4, 0, 0], [0, 4, 0], [0, 0, 1e-4]]), r"shorter than"),
    (dict(lattice=[[4, 0, 0], [0, 4, 0], [0, 0, -4]]), r"left-handed"),
    (dict(lattice=np.eye(3) * 2e4), r"longer than"),
    (dict(lattice=[[4, 0, 0], [0, 4, 0], [9000, 9000, 4]]), r"longer than"),
    (dict(lattice=[4, 4, 2e4, 90, 90, 90]), r"cell length c"),
    (dict(lattice=[4, 4, -4, 90, 90, 90]), r"cell length c"),
    (dict(lattice=[4, 4, 4, 90, 190, 90]), r"cell angle beta"),
    (dict(lattice=[4, 4, 4, 30, 30, 90]), r"do not form a 3D cell"),
    (dict(lattice=[4, 4, 4, 60, 60, 120 - 1e-11]), r"do not form a 3D cell"),  # V/abc < 1e-6
    (dict(frac=[[0, 0, np.nan], [0, 0, 0]]), r"frac contains NaN"),
    (dict(frac=[[0, 0, 0], [0, -np.inf, 0]]), r"frac contains NaN or infinite"),
    (dict(frac=[0.0, 0.0, 0.0]), r"\(N, 3\)"),
    (dict(frac=np.zeros((2, 2))), r"\(N, 3\)"),
    (dict(frac=np.zeros((0, 3)), species=[]), r"no atoms"),
    (dict(frac=[[0, 0, 0], [0.5, 0.5]]), r"rectangular"),
    (dict(species=["Na"]), r"1 species for 2 atoms"),
    (dict(occupancy=[1.0, 0.0]), r"zero occupancy.*drop it"),
    (dict(occupancy=[1.0, 1.1]), r"outside \(0, 1\]"),
    (dict(occupancy=[-0.5, 1.0]), r"outside \(0, 1\]"),
    (dict(occupancy=[np.nan, 1.0]), r"occupancy contains NaN"),
    (dict(occupancy=[1.0, 1.0, 1.0]), r"occupancy has shape \(3,\) but there are 2 atoms"),
    (dict(b_iso=[0.5, -0.1]), r"negative Debye-Waller"),
    (dict(b_iso=[np.inf, 0.0]), r"b_iso contains NaN or infinite"),
    (dict(b_iso=[0.5]), r"b_iso has shape \(1,\)"),
    (dict(u_iso=[0.01, -0.01]), r"negative Debye-Waller"),
    (dict(charges=[1, 0.5]), r"not an integer oxidation state"),
    (dict(charges=[1, 12]), r"not an integer oxidation state"),
    (dict(lattice=[[1 + 1j, 0, 0], [0, 1, 0], [0, 0, 1]]), r"complex"),
])
def test_invalid_inputs_raise_structure_error(changes, match):
    kwargs = {**GOOD, **changes}
    with pytest.raises(StructureError, match=match):
        Structure.from_arrays(**kwargs)


@pytest.mark.parametrize("changes, match", [
    (dict(lattice={"a": 4}), "lattice"),
    (dict(lattice="4 4 4"), "lattice"),
    (dict(species="NaCl"), "single string"),
    (dict(species=[11.0, 17.0]), "atomic number"),
    (dict(species=[True, False]), "atomic number"),
    (dict(label=5), "label"),
])
def test_wrong_python_types_raise_type_error(changes, match):
    with pytest.raises(TypeError, match=match):
        Structure.from_arrays(**{**GOOD, **changes})


def test_occupancy_slightly_above_one_is_clipped():
    s = Structure.from_arrays(**GOOD, occupancy=[1 + 5e-7, 0.3])
    assert s.occupancy.tolist() == [1.0, 0.3]


_ANY_FLOAT = st.one_of(st.floats(-20, 20), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([0.0, 1e-300, 1e300, -1e300, 90.0, 120.0]))
_SPECIES = st.one_of(st.sampled_from(["Fe", "O2-", "na+", "Cl-", 8, 92]),
                     st.integers(-5, 130), st.sampled_from(["Xx", "", "Fe++", "O 2-"]))


def _float_arrays(shapes, elements=_ANY_FLOAT):
    return st.sampled_from(shapes).flatmap(
        lambda shape: hnp.arrays(np.float64, shape, elements=elements))


@st.composite
def _from_arrays_inputs(draw):
    """Mostly well-formed inputs with some fields broken: shapes, NaN, inf, huge values."""
    n = draw(st.integers(0, 4))
    lattice = draw(st.one_of(
        hnp.arrays(np.float64, (3, 3), elements=st.floats(-3, 3)).map(lambda m: m + 5 * np.eye(3)),
        st.tuples(*[st.floats(0.5, 30)] * 3, *[st.floats(20, 160)] * 3).map(np.array),
        _float_arrays([(3, 3), (6,), (2, 3), (3,), ()]),
    ))
    frac = draw(st.one_of(_float_arrays([(n, 3)], st.floats(-3, 3)),
                          _float_arrays([(n, 3), (n, 2), (n,), (n + 1, 3)])))
    species = draw(st.one_of(st.lists(_SPECIES, min_size=n, max_size=n),
                             st.lists(_SPECIES, max_size=5)))
    per_atom = st.one_of(st.none(), _ANY_FLOAT, _float_arrays([(n,)], st.floats(0, 1)),
                         _float_arrays([(n,), (n + 1,), (1, n)]))
    return lattice, frac, species, draw(per_atom), draw(per_atom)


@settings(max_examples=400, deadline=None)
@given(_from_arrays_inputs())
def test_random_arrays_raise_only_structure_or_type_error(inputs):
    lattice, frac, species, occupancy, b_iso = inputs
    try:
        s = Structure.from_arrays(lattice, frac, species, occupancy, b_iso)
    except (StructureError, TypeError):
        return
    assert len(s) == len(species) == np.shape(frac)[0]
    assert s.volume >= 1e-6 * np.prod(s.cell_parameters[:3])
    assert np.all((s.frac >= 0) & (s.frac < 1))
    assert np.all((s.occupancy > 0) & (s.occupancy <= 1))
    assert np.all(np.isfinite(s.b_iso)) and np.all(s.b_iso >= 0)
    assert np.all((s.numbers >= 1) & (s.numbers <= 118))


# --------------------------------------------------------------------------- CIF


def test_nacl_from_space_group_name():
    s = Structure.from_cif(NACL_CIF)
    assert len(s) == 8 and s.label == "NaCl"
    assert sorted(s.numbers.tolist()) == [11] * 4 + [17] * 4
    assert set(s.charges[s.numbers == 11].tolist()) == {1}
    assert set(s.charges[s.numbers == 17].tolist()) == {-1}
    assert positions_of(s, 11) == NA_POSITIONS and positions_of(s, 17) == CL_POSITIONS
    assert s.volume == pytest.approx(5.64**3, rel=1e-12)


def test_nacl_from_explicit_symmetry_operators():
    ops = [op.triplet() for op in gemmi.SpaceGroup("F m -3 m").operations()]
    assert len(ops) == 192  # all 192 operators listed, so special positions must be merged
    text = cif_block(
        "NaCl_ops", (5.64, 5.64, 5.64, 90, 90, 90),
        [("Na1", "Na+", 0, 0, 0), ("Cl1", "Cl-", 0.5, 0.5, 0.5)],
        extra="loop_\n_space_group_symop_operation_xyz\n" + "".join(f"'{o}'\n" for o in ops),
    )
    s = Structure.from_cif(text)
    assert len(s) == 8
    assert positions_of(s, 11) == NA_POSITIONS and positions_of(s, 17) == CL_POSITIONS
    assert s.species.count("Na+") == 4 and s.species.count("Cl-") == 4


def test_operators_not_in_tables_are_applied():
    # P-1 with its inversion centre moved to (1/8, 1/8, 1/8): not a tabulated setting.
    text = cif_block(
        "shifted", (5, 6, 7, 90, 100, 90),
        [("Fe1", "Fe+3", 0.1, 0.2, 0.3), ("O1", "O2-", 0.125, 0.125, 0.125)],
        extra="loop_\n_symmetry_equiv_pos_as_xyz\nx,y,z\n-x+1/4,-y+1/4,-z+1/4\n",
    )
    s = Structure.from_cif(text)
    assert s.species == ["Fe3+", "Fe3+", "O2-"]  # 'Fe+3' form parsed; O on the centre once
    np.testing.assert_allclose(s.frac, [[0.1, 0.2, 0.3], [0.15, 0.05, 0.95],
                                        [0.125, 0.125, 0.125]], atol=1e-12)


def test_unknown_space_group_without_operators_is_an_error():
    text = cif_block("bad_sg", (5, 5, 5, 90, 90, 90), [("Fe1", "Fe", 0.1, 0.2, 0.3)],
                     extra="_symmetry_space_group_name_H-M 'Q 42/z'\n")
    with pytest.raises(StructureError, match="not recognised"):
        Structure.from_cif(text)


def test_cif_without_symmetry_is_p1():
    text = cif_block("p1", (5, 5, 5, 90, 90, 90), [("Fe1", "Fe", 0.1, 0.2, 0.3)])
    assert len(Structure.from_cif(text)) == 1


def test_partial_occupancy_and_b_iso():
    text = cif_block(
        "FeCoO", (4.0, 4.0, 4.0, 90, 90, 90),
        [("Fe1", "Fe", 0, 0, 0, 0.5, 0.6), ("Co1", "Co", 0, 0, 0, 0.5, 0.7),
         ("O1", "O", 0.5, 0.5, 0.5, 1.0, 1.25)],
        columns=("label", "type_symbol", "fract_x", "fract_y", "fract_z", "occupancy",
                 "B_iso_or_equiv"),
        extra="_symmetry_space_group_name_H-M 'P m -3 m'\n",
    )
    s = Structure.from_cif(text)
    assert s.numbers.tolist() == [26, 27, 8]
    assert s.occupancy.tolist() == [0.5, 0.5, 1.0]
    np.testing.assert_allclose(s.b_iso, [0.6, 0.7, 1.25], rtol=1e-12)
    np.testing.assert_array_equal(s.frac[0], s.frac[1])
    assert s.formula == "Co0.5Fe0.5O"


def test_u_iso_from_cif():
    text = cif_block(
        "U", (4.0, 4.0, 4.0, 90, 90, 90),
        [("Fe1", "Fe", 0, 0, 0, 0.01), ("O1", "O", 0.5, 0.5, 0.5, 0.025),
         ("O2", "O", 0.5, 0.5, 0, "?")],
        columns=("label", "type_symbol", "fract_x", "fract_y", "fract_z", "U_iso_or_equiv"),
    )
    s = Structure.from_cif(text)
    np.testing.assert_allclose(s.b_iso, [B_PER_U * 0.01, B_PER_U * 0.025, 0.0], rtol=1e-12)


def test_anisotropic_only_site_uses_u_equivalent():
    text = cif_block(
        "aniso", (4.0, 5.0, 6.0, 90, 90, 90),
        [("Fe1", "Fe", 0.1, 0.2, 0.3, "Uani", "?")],
        columns=("label", "type_symbol", "fract_x", "fract_y", "fract_z", "adp_type",
                 "U_iso_or_equiv"),
        extra="",
    ) + ("loop_\n_atom_site_aniso_label\n_atom_site_aniso_U_11\n_atom_site_aniso_U_22\n"
         "_atom_site_aniso_U_33\n_atom_site_aniso_U_12\n_atom_site_aniso_U_13\n"
         "_atom_site_aniso_U_23\nFe1 0.01 0.02 0.06 0.001 0.002 0.003\n")
    s = Structure.from_cif(text)
    # orthogonal axes: U_eq = (U11 + U22 + U33) / 3 = 0.03
    np.testing.assert_allclose(s.b_iso, [B_PER_U * 0.03], rtol=1e-12)


def test_oxidation_numbers_from_type_symbols():
    text = cif_block("ions", (5, 5, 5, 90, 90, 90),
                     [("Fe1", "Fe3+", 0, 0, 0), ("Fe2", "Fe+2", 0.5, 0, 0),
                      ("O1", "O2-", 0.5, 0.5, 0.5), ("Cu1", "Cu", 0, 0.5, 0)])
    assert Structure.from_cif(text).charges.tolist() == [3, 2, -2, 0]


MULTI_CIF = (
    "data_global\n_publ_section_title 'two phases'\n"
    + cif_block("first", (4, 4, 4, 90, 90, 90), [("Cu1", "Cu", 0, 0, 0)])
    + cif_block("second", (5, 5, 5, 90, 90, 90),
                [("Na1", "Na", 0, 0, 0), ("Cl1", "Cl", 0.5, 0.5, 0.5)])
)


def test_several_blocks_need_a_choice():
    with pytest.raises(StructureError, match=r"'first', 'second'.*block=NAME.*all_from_cif"):
        Structure.from_cif(MULTI_CIF)


def test_block_by_name_and_index():
    assert Structure.from_cif(MULTI_CIF, block="second").formula == "ClNa"
    assert Structure.from_cif(MULTI_CIF, block=0).formula == "Cu"
    assert Structure.from_cif(MULTI_CIF, block=-1).label == "second"
    assert Structure.from_cif(MULTI_CIF, block=1, label="mine").label == "mine"
    with pytest.raises(StructureError, match="no data block named 'third'"):
        Structure.from_cif(MULTI_CIF, block="third")
    with pytest.raises(StructureError, match="out of range"):
        Structure.from_cif(MULTI_CIF, block=2)
    with pytest.raises(StructureError, match="no atom sites"):
        Structure.from_cif(MULTI_CIF, block="global")


def test_all_from_cif_returns_every_block_with_atoms():
    structures = Structure.all_from_cif(MULTI_CIF)
    assert [s.label for s in structures] == ["first", "second"]
    assert [len(s) for s in structures] == [1, 2]


def test_from_cif_path_pathlike_and_gzip(tmp_path):
    path = tmp_path / "NaCl.cif"
    path.write_text(NACL_CIF)
    gz = tmp_path / "NaCl.cif.gz"
    gz.write_bytes(gzip.compress(NACL_CIF.encode()))
    for source in (path, str(path), gz):
        s = Structure.from_cif(source)
        assert len(s) == 8 and s.label == "NaCl"


@pytest.mark.parametrize("text, match", [
    ("/no/such/file.cif", "not found"),
    ("hello\nworld\n", "could not parse"),
    ("data_x\n_cell_length_a 'unterminated\n", "could not parse"),
    ("data_nocell\nloop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n"
     "_atom_site_fract_z\nFe1 0 0 0\n", "no unit cell"),
    ("data_noatoms\n" + CELL_TAGS.format(a=4, b=4, c=4, al=90, be=90, ga=90), "no atom sites"),
    (cif_block("dummy", (4, 4, 4, 90, 90, 90), [("Q1", "Q", 0, 0, 0)]),
     r"unknown element.*'Q1'"),
    (cif_block("zero", (4, 4, 4, 90, 90, 90), [("Fe1", "Fe", 0, 0, 0, 0.0)],
               columns=("label", "type_symbol", "fract_x", "fract_y", "fract_z", "occupancy")),
     "every site has zero occupancy"),
    (cif_block("flat", (4, 4, 4, 90, 180, 90), [("Fe1", "Fe", 0, 0, 0)]), "cell angle beta"),
])
def test_bad_cif_raises_structure_error(text, match):
    with pytest.raises(StructureError, match=match):
        Structure.from_cif(text)


def test_zero_occupancy_sites_dropped_with_warning():
    text = cif_block("vac", (4, 4, 4, 90, 90, 90), [("Fe1", "Fe", 0, 0, 0, 1.0), ("O1", "O", 0.5, 0.5, 0.5, 0.0)],
                     columns=("label", "type_symbol", "fract_x", "fract_y", "fract_z", "occupancy"))
    with pytest.warns(RuntimeWarning, match="dropped 1 atoms with zero occupancy"):
        s = Structure.from_cif(text)
    assert list(s.numbers) == [26]


def test_bad_file_content_names_the_file(tmp_path):
    path = tmp_path / "notes.cif"
    path.write_text("just some notes\n")
    with pytest.raises(StructureError, match="notes.cif"):
        Structure.from_cif(path)


def test_from_cif_rejects_non_text():
    with pytest.raises(TypeError):
        Structure.from_cif(b"data_x\n")


# --------------------------------------------------------------------------- real data


def _mp20_rows(n):
    if not MP20_TEST.exists():
        pytest.skip(f"{MP20_TEST} not present")
    with gzip.open(MP20_TEST, "rt", newline="") as handle:
        return [row for _, row in zip(range(n), csv.DictReader(handle))]


def test_mp20_cifs_agree_with_pymatgen():
    pytest.importorskip("pymatgen.core")
    for row in _mp20_rows(50):
        ours = Structure.from_cif(row["cif"], label=row["material_id"])
        theirs = pymatgen_from_cif_text(row["cif"])
        assert len(ours) == len(theirs), row["material_id"]
        assert ours.volume == pytest.approx(theirs.volume, rel=1e-6)
        assert sorted(ours.numbers.tolist()) == sorted(site.specie.Z for site in theirs)
        converted = Structure.from_pymatgen(theirs)
        # pymatgen orients the cell differently (c along z): compare metric tensors
        np.testing.assert_allclose(converted.lattice @ converted.lattice.T,
                                   ours.lattice @ ours.lattice.T, atol=1e-6)
        np.testing.assert_allclose(converted.cell_parameters, ours.cell_parameters, atol=1e-6)
        assert_same_atoms(ours, converted, tol=1e-6)


def _xred_cifs():
    return sorted(XRED.glob("**/*.cif")) if XRED.exists() else []


@pytest.mark.skipif(not XRED.exists(), reason="experimental xred data not present")
@pytest.mark.parametrize("path", _xred_cifs(), ids=lambda p: p.parent.name)
def test_xred_cifs_match_pymatgen(path):
    mg = pytest.importorskip("pymatgen.core")
    ours = Structure.from_cif(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = mg.Structure.from_file(path)
    # pymatgen keeps a mixed site as one site with several species; we keep one atom each
    assert len(ours) == sum(len(site.species) for site in theirs)
    assert ours.volume == pytest.approx(theirs.volume, rel=1e-6)
    composition = theirs.composition.get_el_amt_dict()
    for element, amount in composition.items():
        mask = ours.numbers == gemmi.Element(element).atomic_number
        assert ours.occupancy[mask].sum() == pytest.approx(amount, rel=1e-9)
    assert_same_atoms(ours, Structure.from_pymatgen(theirs), tol=1e-6)


def test_rutile_special_positions():
    path = XRED / "RuO2" / "1538150.cif"
    if not path.exists():
        pytest.skip(f"{path} not present")
    s = Structure.from_cif(path)
    assert s.formula == "O4Ru2"
    assert positions_of(s, 44) == {(0, 0, 0), (0.5, 0.5, 0.5)}
    assert positions_of(s, 8) == {(0.31, 0.31, 0), (0.69, 0.69, 0), (0.81, 0.19, 0.5),
                                  (0.19, 0.81, 0.5)}


# --------------------------------------------------------------------------- pymatgen / ASE


def test_from_pymatgen_disorder_oxidation_and_b_iso():
    mg = pytest.importorskip("pymatgen.core")
    lattice = mg.Lattice.cubic(4.0)
    structure = mg.Structure(
        lattice,
        [{mg.Species("Fe", 3): 0.5, mg.Species("Co", 2): 0.25},
         {mg.Species("O", -2): 1.0},
         {mg.Species("Fe", 8 / 3): 1.0}],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]],
        site_properties={"b_iso": [0.4, 0.9, None]},
    )
    s = Structure.from_pymatgen(structure, label="fe")
    assert s.numbers.tolist() == [26, 27, 8, 26]
    assert s.charges.tolist() == [3, 2, -2, 0]  # 8/3 is not an integer state -> 0
    assert s.occupancy.tolist() == [0.5, 0.25, 1.0, 1.0]
    assert s.b_iso.tolist() == [0.4, 0.4, 0.9, 0.0]
    assert s.label == "fe"
    np.testing.assert_allclose(s.lattice, np.eye(3) * 4.0)


def test_from_pymatgen_left_handed_lattice_keeps_positions():
    mg = pytest.importorskip("pymatgen.core")
    structure = mg.Structure(mg.Lattice(np.diag([3.0, -4.0, 5.0])), ["Cu", "Zn"],
                             [[0.1, 0.2, 0.3], [0.5, 0.25, 0.75]])
    s = Structure.from_pymatgen(structure)
    assert s.volume == pytest.approx(60.0)
    back = s.frac @ s.lattice @ np.linalg.inv(structure.lattice.matrix) - structure.frac_coords
    np.testing.assert_allclose(back - np.round(back), 0, atol=1e-12)


def test_from_pymatgen_rejects_other_objects():
    with pytest.raises(TypeError, match="pymatgen"):
        Structure.from_pymatgen({"lattice": 1})


def test_from_ase_bulk_copper():
    build = pytest.importorskip("ase.build")
    s = Structure.from_ase(build.bulk("Cu", "fcc", a=3.6))
    assert len(s) == 1 and s.numbers.tolist() == [29]
    assert s.volume == pytest.approx(3.6**3 / 4, rel=1e-12)


def test_from_ase_mixed_sites_match_from_cif():
    ase_io = pytest.importorskip("ase.io")
    path = XRED / "LiTMO3" / "LiTMO3.cif"
    if not path.exists():
        pytest.skip(f"{path} not present")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = ase_io.read(path)
    from_ase = Structure.from_ase(atoms)
    from_cif = Structure.from_cif(path)
    assert len(from_ase) == len(from_cif) == 24
    assert from_ase.formula == from_cif.formula == "Co0.3Li3.09Mn0.3Ni2.31O6"
    assert_same_atoms(from_cif, from_ase, tol=1e-6)


def test_from_ase_degenerate_and_non_periodic_cells():
    ase = pytest.importorskip("ase")
    with pytest.raises(StructureError, match="shorter than"):
        Structure.from_ase(ase.Atoms("Cu", positions=[[0, 0, 0]]))
    with pytest.warns(UserWarning, match="periodic"):
        s = Structure.from_ase(ase.Atoms("Cu", positions=[[1, 1, 1]], cell=np.eye(3) * 4,
                                         pbc=[True, True, False]))
    np.testing.assert_allclose(s.frac, [[0.25, 0.25, 0.25]])
    atoms = ase.Atoms("Cu", scaled_positions=[[0.1, 0.2, 0.3]], cell=-np.eye(3) * 4, pbc=True)
    flipped = Structure.from_ase(atoms)
    assert flipped.volume == pytest.approx(64.0)
    shift = (flipped.frac @ flipped.lattice - atoms.positions) / 4.0  # whole lattice vectors
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-12)
