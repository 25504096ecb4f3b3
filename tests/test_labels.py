"""Space-group labels: Laue classes, systematic absences and extinction groups."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import spglib

from xrdflow.data import labels as L


# --------------------------------------------------------------------------- settings


def test_standard_hall_number_is_the_ita_standard_setting():
    seen = set()
    for sg in range(1, 231):
        hall = L.standard_hall_number(sg)
        assert 1 <= hall <= 530 and hall not in seen
        seen.add(hall)
        t = spglib.get_spacegroup_type(hall)
        assert t.number == sg
        assert all(spglib.get_spacegroup_type(h).number != sg for h in range(1, hall))   # the first one
        system = L.crystal_system(sg)
        if system == "monoclinic":
            assert t.choice in ("b", "b1"), (sg, t.choice)         # unique axis b, cell choice 1
        elif sg in (146, 148, 155, 160, 161, 166, 167):
            assert t.choice == "H", (sg, t.choice)                  # R groups on hexagonal axes
        else:
            assert t.choice in ("", "1"), (sg, t.choice)            # abc setting; origin choice 1
    assert L.space_group_symbol(14) == "P2_1/c"
    assert L.space_group_symbol(225) == "Fm-3m"


@pytest.mark.parametrize("bad", [0, 231, -1, 14.0, "14", True, None])
def test_bad_space_group_numbers_are_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        L.labels_for(bad)
    with pytest.raises((TypeError, ValueError)):
        L.absent_reflections(bad)


@pytest.mark.parametrize("bad", [0, 33, 2.0, True])
def test_bad_hkl_max_is_refused(bad):
    with pytest.raises(ValueError):
        L.absent_reflections(14, bad)


def test_numpy_integers_are_accepted():
    assert L.labels_for(np.int64(225)) == L.labels_for(225)


# --------------------------------------------------------------------------- systems and Laue classes


def test_crystal_systems():
    assert L.CRYSTAL_SYSTEMS == ("triclinic", "monoclinic", "orthorhombic", "tetragonal",
                                 "trigonal", "hexagonal", "cubic")
    known = {1: "triclinic", 2: "triclinic", 3: "monoclinic", 14: "monoclinic", 15: "monoclinic",
             16: "orthorhombic", 62: "orthorhombic", 74: "orthorhombic", 75: "tetragonal",
             139: "tetragonal", 142: "tetragonal", 143: "trigonal", 166: "trigonal", 167: "trigonal",
             168: "hexagonal", 194: "hexagonal", 195: "cubic", 225: "cubic", 230: "cubic"}
    for sg, system in known.items():
        assert L.crystal_system(sg) == system
        assert L.labels_for(sg)["crystal_system"] == L.CRYSTAL_SYSTEMS.index(system)


def test_laue_classes_of_known_groups():
    known = {1: "-1", 2: "-1", 14: "2/m", 62: "mmm", 88: "4/m", 139: "4/mmm", 148: "-3", 147: "-3",
             166: "-3m", 150: "-3m", 176: "6/m", 194: "6/mmm", 205: "m-3", 225: "m-3m", 216: "m-3m"}
    for sg, laue in known.items():
        assert L.laue_class(sg) == laue, sg


def test_laue_class_is_the_point_group_plus_inversion():
    # Independent check against spglib's point-group symbol: adding inversion
    # to a centrosymmetric point group changes nothing, so the Laue class of a
    # centrosymmetric group is its own point group.
    counts = {}
    for sg in range(1, 231):
        pg = spglib.get_spacegroup_type(L.standard_hall_number(sg)).pointgroup_international
        rot, _ = L.space_group_operations(sg)
        centro = any(np.array_equal(r, -np.eye(3, dtype=r.dtype)) for r in rot)
        if centro:
            assert L.laue_class(sg) == pg, (sg, pg)
        counts[L.laue_class(sg)] = counts.get(L.laue_class(sg), 0) + 1
    assert set(counts) == set(L.LAUE_CLASSES)


# --------------------------------------------------------------------------- absences


def test_absences_of_fm3m():
    absent = L.absent_reflections(225)
    assert (1, 0, 0) in absent and (1, 1, 0) in absent and (2, 1, 0) in absent
    assert (1, 1, 1) not in absent and (2, 0, 0) not in absent and (2, 2, 0) not in absent
    # F centring: exactly the mixed-parity hkl
    for h in absent:
        assert len({x % 2 for x in h}) == 2


def test_absences_of_p21c_unique_axis_b():
    absent = L.absent_reflections(14)
    assert (0, 1, 0) in absent and (0, 3, 0) in absent and (0, 2, 0) not in absent
    for h, l in itertools.product(range(-8, 9), repeat=2):
        if (h, l) != (0, 0):
            assert ((h, 0, l) in absent) == (l % 2 == 1), (h, l)
    assert (1, 1, 1) not in absent and (1, 2, 1) not in absent


def test_absences_follow_known_conditions():
    assert L.absent_reflections(1) == frozenset() == L.absent_reflections(2)
    assert L.absent_reflections(221) == frozenset()                                  # Pm-3m
    cube = list(itertools.product(range(-8, 9), repeat=3))
    assert L.absent_reflections(229) == {h for h in cube if sum(h) % 2}                 # Im-3m: I
    # R3 on hexagonal axes (obverse): -h + k + l = 3n
    r3 = L.absent_reflections(146, 4)
    cube = itertools.product(range(-4, 5), repeat=3)
    assert r3 == {h for h in cube if h != (0, 0, 0) and (-h[0] + h[1] + h[2]) % 3}
    # screw axes along c
    assert (0, 0, 1) in L.absent_reflections(76) and (0, 0, 2) in L.absent_reflections(76)
    assert (0, 0, 4) not in L.absent_reflections(76)                                # 4_1: l = 4n
    assert (0, 0, 3) not in L.absent_reflections(171) and (0, 0, 2) in L.absent_reflections(171)  # 6_2
    # Fd-3m has more absences than Fm-3m: 200 (d glide, h00: h = 4n)
    assert L.absent_reflections(225) < L.absent_reflections(227)
    assert (2, 0, 0) in L.absent_reflections(227) and (4, 0, 0) not in L.absent_reflections(227)


def test_systematically_absent_agrees_with_absent_reflections_and_goes_beyond():
    grid = np.array(list(itertools.product(range(-3, 4), repeat=3)))
    for sg in (14, 62, 122, 161, 227, 230):
        mask = L.systematically_absent(sg, grid)
        assert {tuple(h) for h in grid[mask].tolist()} == L.absent_reflections(sg, 3)
    assert L.systematically_absent(227, (20, 0, 0)) == False        # h00: h = 4n
    assert L.systematically_absent(227, (22, 0, 0)) == True
    with pytest.raises(ValueError):
        L.systematically_absent(14, [1.0, 0.0, 0.0])


def test_absent_sets_are_invariant_under_the_lattice_holohedry():
    # The premise of the extinction-group keys: re-choosing the conventional
    # cell by an operation of the lattice's holohedry maps every group's
    # absent set onto itself, except for axis permutations in the
    # orthorhombic and cubic systems, over which the key is canonicalised
    # (there the sign changes, mmm, must leave the set invariant).
    holohedry = {"triclinic": 2, "monoclinic": 10, "orthorhombic": 47, "tetragonal": 123,
                 "trigonal": 191, "hexagonal": 191, "cubic": 47}
    grid = np.array(list(itertools.product(range(-6, 7), repeat=3)))
    for sg in range(1, 231):
        holo = 166 if L.space_group_symbol(sg)[0] == "R" else holohedry[L.crystal_system(sg)]
        mask = L.systematically_absent(sg, grid)
        for r in L.space_group_operations(holo)[0]:
            assert np.array_equal(L.systematically_absent(sg, grid @ r), mask), (sg, r.tolist())
    # Pa-3 is the one cubic group whose set a 4-fold rotation (x <-> y) changes
    four = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    changed = [sg for sg in range(195, 231)
               if not np.array_equal(L.systematically_absent(sg, grid @ four), L.systematically_absent(sg, grid))]
    assert changed == [205]


# --------------------------------------------------------------------------- extinction groups


def test_every_space_group_gets_labels():
    n = L.n_extinction_groups()
    assert n == L.N_EXTINCTION_GROUPS == 120
    seen = set()
    for sg in range(1, 231):
        lab = L.labels_for(sg)
        assert set(lab) == {"crystal_system", "laue_class", "space_group", "extinction_group"}
        assert lab["space_group"] == sg
        assert lab["laue_class"] in L.LAUE_CLASSES
        assert 0 <= lab["crystal_system"] < 7
        assert 0 <= lab["extinction_group"] < n
        assert sg in L.extinction_group_members(lab["extinction_group"])
        seen.add(lab["extinction_group"])
    assert seen == set(range(n))
    members = [sg for eg in range(n) for sg in L.extinction_group_members(eg)]
    assert sorted(members) == list(range(1, 231))
    # numbered by smallest member
    firsts = [L.extinction_group_members(eg)[0] for eg in range(n)]
    assert firsts == sorted(firsts)
    with pytest.raises(ValueError):
        L.extinction_group_members(n)


def test_known_extinction_groups():
    eg = L.extinction_group
    assert eg(1) == eg(2) == 0                                    # P1, P-1
    assert eg(3) == eg(6) == eg(10)                               # P2, Pm, P2/m
    assert eg(13) == eg(7)                                        # P2/c, Pc
    assert eg(14) != eg(13)                                       # P2_1/c vs P2/c
    assert eg(225) == eg(216) == eg(209)                          # Fm-3m, F-43m, F432
    assert eg(227) != eg(225)                                     # Fd-3m vs Fm-3m
    assert eg(230) != eg(229)                                     # Ia-3d vs Im-3m
    assert eg(167) != eg(166) and eg(166) != eg(164)              # R-3c, R-3m, P-3m1
    assert eg(158) != eg(159)                                     # P3c1 vs P31c
    assert eg(149) == eg(150)                                     # P312, P321 (both no absences)
    assert eg(144) == eg(145) and eg(169) == eg(170)              # enantiomorphs


def test_extinction_groups_never_mix_laue_classes():
    for scheme in ("laue", "standard_setting"):
        for members in L.extinction_partition(scheme=scheme):
            assert len({L.laue_class(sg) for sg in members}) == 1, members
            assert len({L.crystal_system(sg) for sg in members}) == 1, members
            # same Laue class and, within it, the same absences
            if scheme == "standard_setting":
                assert len({L.absent_reflections(sg) for sg in members}) == 1
    for members in L.extinction_partition(scheme="crystal_system"):
        assert len({L.crystal_system(sg) for sg in members}) == 1, members


def test_orthorhombic_groups_are_compared_up_to_axis_labels():
    # Pmc2_1 (26, h0l: l = 2n), Pma2 (28, h0l: h = 2n), Pmma (51, hk0: h = 2n):
    # the same absences once a, b, c are relabelled.
    swap = lambda s, p: frozenset(tuple(h[i] for i in p) for h in s)
    a26, a28, a51 = (L.absent_reflections(sg) for sg in (26, 28, 51))
    assert len({a26, a28, a51}) == 3
    assert swap(a26, (2, 1, 0)) == a28 and swap(a28, (0, 2, 1)) == a51
    assert L.extinction_group(26) == L.extinction_group(28) == L.extinction_group(51)
    assert L.extinction_group_name(L.extinction_group(26)) == "Pmc2_1|Pma2|Pmma"
    assert len({L.extinction_group(sg, "standard_setting") for sg in (26, 28, 51)}) == 3
    assert L.extinction_group(21) == L.extinction_group(38)         # C222 and Amm2: C--- up to axes
    assert L.extinction_group(62) != L.extinction_group(61)         # Pnma vs Pbca


def test_scheme_counts_and_nesting():
    counts = {s: L.n_extinction_groups(s) for s in L.SCHEMES}
    assert counts == {"laue": 120, "crystal_system": 101, "standard_setting": 131}
    # each coarser scheme is a union of finer classes
    def coarser(fine, coarse):
        where = {sg: i for i, m in enumerate(L.extinction_partition(scheme=coarse)) for sg in m}
        return all(len({where[sg] for sg in m}) == 1 for m in L.extinction_partition(scheme=fine))
    assert coarser("standard_setting", "laue") and coarser("laue", "crystal_system")
    # crystal_system (Park et al. 2017, 101) merges the two Laue classes of a system
    assert L.extinction_group(75, "crystal_system") == L.extinction_group(89, "crystal_system")  # P4, P422
    assert L.extinction_group(75) != L.extinction_group(89)
    with pytest.raises(ValueError):
        L.extinction_group(14, scheme="nope")


@pytest.mark.parametrize("scheme", ["laue", "crystal_system", "standard_setting"])
def test_partition_does_not_depend_on_hkl_max(scheme):
    p8 = L.extinction_partition(8, scheme)
    assert L.extinction_partition(6, scheme) == p8
    assert L.extinction_partition(12, scheme) == p8
    assert L.extinction_partition(3, scheme) != p8       # too small: see the module docstring


def test_first_call_is_fast_and_cached():
    for f in (L._partition, L._group_of, L._absent_cubes, L._operations, L._laue_class,
              L._standard_hall_numbers):
        f.cache_clear()
    t0 = time.perf_counter()
    L.extinction_group(14)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for sg in range(1, 231):
        L.labels_for(sg)
    again = time.perf_counter() - t0
    assert first < 2.0, first          # ~0.5 s measured; slack for a loaded CI core
    assert again < 0.05, again


# --------------------------------------------------------------------------- against the simulator


def _orbit(rot, trans, x):
    pts = np.mod(np.einsum("nij,j->ni", rot, x) + trans, 1.0)
    out = []
    for p in pts:
        if not any(np.all(np.abs((p - q) - np.round(p - q)) < 1e-6) for q in out):
            out.append(p)
    return np.array(out)


def _random_cell(system, rng):
    a, b, c = rng.uniform(5.0, 10.0, 3)
    if system == "triclinic":
        return (a, b, c, *rng.uniform(75, 105, 3))
    if system == "monoclinic":
        return (a, b, c, 90, rng.uniform(95, 115), 90)
    if system == "orthorhombic":
        return (a, b, c, 90, 90, 90)
    if system == "tetragonal":
        return (a, a, c, 90, 90, 90)
    if system in ("trigonal", "hexagonal"):
        return (a, a, c, 90, 90, 120)
    return (a, a, a, 90, 90, 90)


def _representatives(hkl, laue_rot):
    """Each hkl mapped to the largest member of its Laue orbit (h @ R over R in the Laue group)."""
    images = np.einsum("mi,nij->mnj", hkl, laue_rot)                         # (M, n, 3)
    key = (images[..., 0] * 1000 + images[..., 1]) * 1000 + images[..., 2]   # |h| < 500
    best = images[np.arange(len(hkl)), np.argmax(key, axis=1)]
    return {tuple(h) for h in best.tolist()}


@pytest.mark.parametrize("sg", [2, 14, 15, 19, 43, 62, 70, 88, 122, 142, 148, 161, 176, 185, 205, 227, 230])
def test_simulator_lists_exactly_the_non_absent_reflections(sg):
    import xrdflow as xf

    rng = np.random.default_rng(1000 + sg)
    rot, trans = L.space_group_operations(sg)
    # two general-position orbits: no accidental extra symmetry, no special positions
    pos = np.concatenate([_orbit(rot, trans, rng.random(3)) for _ in range(2)])
    assert len(pos) == 2 * len(rot)
    s = xf.Structure.from_arrays(_random_cell(L.crystal_system(sg), rng), pos, ["C"] * len(pos))
    assert spglib.get_symmetry_dataset((s.lattice, s.frac, s.numbers), symprec=1e-3).number == sg

    sim = xf.Simulator("CuKa1", two_theta=(5, 80))
    peaks = sim.peaks(s)
    assert len(peaks) > 0
    # 1. the simulator (its own symmetry detection) never lists an absent hkl
    assert not np.any(L.systematically_absent(sg, peaks.hkl))

    # 2. every non-absent hkl in range is listed, up to Laue-equivalence
    lam = sim.radiation.primary_wavelength
    g_star = np.linalg.inv(s.lattice @ s.lattice.T)
    m = int(np.ceil(np.linalg.norm(s.lattice, axis=1).max() * 2 / lam)) + 1
    r = np.arange(-m, m + 1)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    sin_th = lam * np.sqrt(np.einsum("mi,ij,mj->m", hkl, g_star, hkl)) / 2
    hkl, sin_th = hkl[sin_th < 1], sin_th[sin_th < 1]
    tt = 2 * np.degrees(np.arcsin(sin_th))
    hkl = hkl[(tt >= 5) & (tt <= 80)]
    present = hkl[~L.systematically_absent(sg, hkl)]
    assert len(present) < len(hkl) or L.absent_reflections(sg) == frozenset()
    laue_rot = np.unique(np.concatenate([rot, -rot]).reshape(-1, 9), axis=0).reshape(-1, 3, 3)
    assert _representatives(present, laue_rot) == _representatives(np.asarray(peaks.hkl), laue_rot)
    # and the multiplicities add up to the number of present hkl
    assert int(np.sum(peaks.multiplicity)) == len(present)
