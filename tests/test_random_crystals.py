"""Balanced random crystals (xrdflow.data.random_crystals, needs PyXtal)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

pytest.importorskip("pyxtal")

import xrdflow as xf  # noqa: E402
from xrdflow.data import labels_for  # noqa: E402
from xrdflow.data import random_crystals as rc  # noqa: E402
from xrdflow.data.random_crystals import (  # noqa: E402
    RandomCrystal, choose_space_group, compositions_from, generate_one, generate_random_crystals,
    min_distance_ratio, space_group_of, space_group_weights)

# Small, quick settings: groups of every crystal system, simple compositions.
SPACE_GROUPS = {2: 1.0, 14: 1.0, 38: 1.0, 62: 1.0, 99: 1.0, 139: 1.0, 148: 1.0, 166: 1.0, 186: 1.0,
                194: 1.0, 221: 1.0, 225: 1.0}
COMPOSITIONS = [{"Na": 1, "Cl": 1}, {"Mg": 1, "O": 1}, {"Ti": 1, "O": 2}, {"Sr": 1, "Ti": 1, "O": 3},
                {"Ga": 1, "As": 1}, {"Al": 2, "O": 3}]
SETTINGS = dict(seed=7, space_groups=SPACE_GROUPS, compositions=COMPOSITIONS, max_atoms=20, progress=False)
DRAW = dict(seed=7, weights=SPACE_GROUPS, compositions=COMPOSITIONS, max_atoms=20)  # what decides the groups


def reduced(structure):
    counts = {}
    for z in structure.numbers.tolist():
        counts[z] = counts.get(z, 0) + 1
    g = math.gcd(*counts.values())
    return {xf.Structure.from_arrays(np.eye(3) * 3, [[0, 0, 0]], [z]).species[0]: c // g
            for z, c in counts.items()}


def same(a: RandomCrystal, b: RandomCrystal):
    assert (a.index, a.space_group, a.attempts) == (b.index, b.space_group, b.attempts)
    sa, sb = a.structure, b.structure
    assert sa.label == sb.label
    np.testing.assert_array_equal(sa.lattice, sb.lattice)
    np.testing.assert_array_equal(sa.frac, sb.frac)
    np.testing.assert_array_equal(sa.numbers, sb.numbers)


@pytest.fixture(scope="module")
def crystals():
    return generate_random_crystals(10, workers=1, **SETTINGS)


# ----------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------


def test_exactly_n_in_index_order(crystals):
    assert len(crystals) == 10
    assert [c.index for c in crystals] == list(range(10))
    assert [c.structure.label for c in crystals] == [f"random-7-{i}" for i in range(10)]
    assert all(c.attempts >= 1 for c in crystals)


def test_resume_gives_the_same_crystals(crystals):
    tail = generate_random_crystals(5, start=5, workers=1, **SETTINGS)
    assert [c.index for c in tail] == list(range(5, 10))
    for a, b in zip(crystals[5:], tail):
        same(a, b)


def test_workers_give_the_same_crystals(crystals):
    parallel = generate_random_crystals(10, workers=2, **SETTINGS)
    for a, b in zip(crystals, parallel):
        same(a, b)


def test_generate_one_matches_the_sequence(crystals):
    one = generate_one(3, seed=7, weights=SPACE_GROUPS, compositions=COMPOSITIONS, max_atoms=20)
    same(crystals[3], one)


def test_another_seed_gives_other_crystals(crystals):
    other = generate_random_crystals(3, **{**SETTINGS, "seed": 8}, workers=1)
    assert any(not np.array_equal(a.structure.frac, b.structure.frac) or a.structure.n_atoms != b.structure.n_atoms
               for a, b in zip(crystals, other))


def test_failed_first_stream_continues_with_the_next(monkeypatch):
    # Index 1 fails in its first stream: it must come from stream 1, still exactly n, with a warning.
    real = rc._generate

    def flaky(ctx, index, stream, attempts_before=0):
        if index == 1 and stream == 0:
            return None, ctx.max_attempts
        return real(ctx, index, stream, attempts_before)

    monkeypatch.setattr(rc, "_generate", flaky)
    with pytest.warns(RuntimeWarning, match="1 of 3 indices found no crystal"):
        got = generate_random_crystals(3, workers=1, max_attempts=5, **SETTINGS)
    assert [c.index for c in got] == [0, 1, 2]
    monkeypatch.setattr(rc, "_generate", real)
    retry = generate_one(1, seed=7, weights=SPACE_GROUPS, compositions=COMPOSITIONS, max_atoms=20,
                         max_attempts=5, stream=1)
    assert got[1].attempts == 5 + retry.attempts
    assert got[1].space_group == space_group_of(1, **DRAW)  # same group
    np.testing.assert_array_equal(got[1].structure.frac, retry.structure.frac)


# ----------------------------------------------------------------------------
# the crystals themselves
# ----------------------------------------------------------------------------


def test_space_group_and_labels(crystals):
    for c in crystals:
        assert c.space_group in SPACE_GROUPS
        assert c.space_group == space_group_of(c.index, **DRAW)
        for symprec in (1e-3, 1e-2, 1e-1):
            assert xf.space_group(c.structure, symprec)[0] == c.space_group
        labels = labels_for(c.space_group)
        assert labels["space_group"] == c.space_group


def test_geometry_and_composition(crystals):
    allowed = [dict(sorted(c.items())) for c in COMPOSITIONS]
    for c in crystals:
        s = c.structure
        assert 1 <= s.n_atoms <= 20
        assert min_distance_ratio(s) >= 0.7
        assert dict(sorted(reduced(s).items())) in allowed
        assert np.all(s.occupancy == 1.0)


def test_conventional_cells():
    got = generate_random_crystals(3, workers=1, cell="conventional", **SETTINGS)
    for c in got:
        assert c.structure.n_atoms <= 20
        assert xf.space_group(c.structure)[0] == c.space_group


def test_single_space_group():
    w = space_group_weights({225: 1.0})
    assert w[224] == 1.0 and w.sum() == 1.0
    assert {space_group_of(i, seed=1, weights={225: 1.0}, compositions=COMPOSITIONS) for i in range(200)} == {225}
    got = generate_random_crystals(2, seed=1, space_groups={225: 1.0}, compositions=COMPOSITIONS[:2],
                                   max_atoms=8, workers=1, progress=False)
    assert [c.space_group for c in got] == [225, 225]
    assert all(xf.space_group(c.structure)[0] == 225 for c in got)


# ----------------------------------------------------------------------------
# distances
# ----------------------------------------------------------------------------


def brute_force_ratio(s, reach=3):
    r = np.array([rc._covalent_radius(z) for z in s.numbers.tolist()])
    best = np.inf
    shifts = [np.array([i, j, k]) for i in range(-reach, reach + 1) for j in range(-reach, reach + 1)
              for k in range(-reach, reach + 1)]
    for a in range(s.n_atoms):
        for b in range(s.n_atoms):
            for t in shifts:
                if a == b and not t.any():
                    continue
                d = np.linalg.norm((s.frac[b] + t - s.frac[a]) @ s.lattice)
                best = min(best, d / (r[a] + r[b]))
    return best


def test_min_distance_ratio_sees_periodic_images():
    cu_r = rc._covalent_radius(29)
    # One atom: its only neighbours are its own images one lattice vector away.
    one = xf.Structure.from_arrays([2.0, 3.0, 4.0, 90, 90, 90], [[0.3, 0.3, 0.3]], ["Cu"])
    assert min_distance_ratio(one) == pytest.approx(2.0 / (2 * cu_r))
    # Two atoms near opposite faces: close only across the face.
    two = xf.Structure.from_arrays([6.0, 6.0, 6.0, 90, 90, 90], [[0.02, 0.5, 0.5], [0.98, 0.5, 0.5]],
                                   ["Cu", "Cu"])
    assert min_distance_ratio(two) == pytest.approx(0.24 / (2 * cu_r))
    # Oblique cell: agrees with a brute-force search over many images.
    skew = xf.Structure.from_arrays([3.1, 3.4, 5.0, 70, 110, 65], [[0.1, 0.2, 0.3], [0.6, 0.9, 0.1]],
                                    ["Na", "Cl"])
    assert min_distance_ratio(skew) == pytest.approx(brute_force_ratio(skew))


def test_min_distance_ratio_of_generated_crystals(crystals):
    for c in crystals[:4]:
        expected = brute_force_ratio(c.structure, reach=2)
        got = min_distance_ratio(c.structure)
        assert got == pytest.approx(expected) or (got >= 1 and expected >= 1)


# ----------------------------------------------------------------------------
# space-group weights and the choice
# ----------------------------------------------------------------------------


def test_uniform_choice_is_uniform():
    w = space_group_weights("uniform")
    assert w.shape == (230,) and np.allclose(w, 1 / 230)
    rng = np.random.default_rng(0)
    draws = np.array([choose_space_group(rng, w) for _ in range(23_000)])
    counts = np.bincount(draws, minlength=231)[1:]
    assert counts.sum() == 23_000 and draws.min() >= 1 and draws.max() <= 230
    # 100 expected per group: chi-square with 229 degrees of freedom (mean 229, sd 21.4).
    chi2 = float(((counts - 100.0) ** 2 / 100.0).sum())
    assert chi2 < 229 + 6 * 21.4
    assert counts.min() >= 50 and counts.max() <= 150


def test_choice_follows_weights():
    w = space_group_weights({1: 1.0, 2: 3.0})
    rng = np.random.default_rng(1)
    draws = np.array([choose_space_group(rng, w) for _ in range(4000)])
    assert set(draws.tolist()) == {1, 2}
    assert abs((draws == 2).mean() - 0.75) < 0.04


def test_space_group_of_is_per_index():
    first = [space_group_of(i, seed=5, compositions=COMPOSITIONS, weights=SPACE_GROUPS) for i in range(50)]
    assert first == [space_group_of(i, seed=5, compositions=COMPOSITIONS, weights=SPACE_GROUPS) for i in range(50)]
    assert first != [space_group_of(i, seed=6, compositions=COMPOSITIONS, weights=SPACE_GROUPS) for i in range(50)]
    assert set(first) <= set(SPACE_GROUPS)


def test_bundled_weights_follow_the_database():
    w = space_group_weights("bundled")
    assert w.shape == (230,) and w.sum() == pytest.approx(1.0)
    assert w[225 - 1] > 10 / 230  # Fm-3m is common in MP-20
    assert (w == 0).any()  # and some groups are absent


# ----------------------------------------------------------------------------
# compositions
# ----------------------------------------------------------------------------


def test_compositions_from_structures():
    nacl = xf.Structure.from_arrays([5.64] * 3 + [90] * 3,
                                    [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                                     [0.5, 0.5, 0.5], [0, 0, 0.5], [0, 0.5, 0], [0.5, 0, 0]],
                                    ["Na"] * 4 + ["Cl"] * 4)
    tio2 = xf.Structure.from_arrays([4.6, 4.6, 2.96, 90, 90, 90],
                                    [[0, 0, 0], [0.5, 0.5, 0.5], [0.3, 0.3, 0], [0.7, 0.7, 0],
                                     [0.8, 0.2, 0.5], [0.2, 0.8, 0.5]], ["Ti"] * 2 + ["O"] * 4)
    assert compositions_from([nacl, tio2]) == [{"Na": 1, "Cl": 1}, {"O": 2, "Ti": 1}]
    mixed = xf.Structure.from_arrays([3, 3, 3, 90, 90, 90], [[0, 0, 0], [0, 0, 0]], ["Fe", "Ni"],
                                     occupancy=[0.5, 0.5])
    with pytest.warns(RuntimeWarning, match="1 structures with non-integer"):
        assert compositions_from([mixed, nacl]) == [{"Na": 1, "Cl": 1}]


def test_default_compositions_come_from_the_bundled_data():
    comps = rc._normalize_compositions(None)
    assert len(comps) == 3000
    assert all(1 <= len(c) <= 3 for c in comps)  # MP-20: at most ternary


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=-1), "n must be >= 0"),
    (dict(n=2, space_groups={231: 1.0}), "unknown space group 231"),
    (dict(n=2, space_groups={0: 1.0}), "unknown space group 0"),
    (dict(n=2, space_groups={"Fm-3m": 1.0}), "unknown space group 'Fm-3m'"),
    (dict(n=2, space_groups={225: -1.0, 1: 2.0}), "negative weight -1 for space group 225"),
    (dict(n=2, space_groups={225: 0.0}), "sum to 0"),
    (dict(n=2, space_groups={225: float("nan")}), "must be finite"),
    (dict(n=2, space_groups="balanced"), "unknown space-group weights 'balanced'"),
    (dict(n=2, space_groups=np.ones(10)), "shape"),
    (dict(n=2, compositions=[{"Xx": 1}]), "unknown element 'Xx'"),
    (dict(n=2, compositions=[{"Na": 0}]), "positive integers"),
    (dict(n=2, compositions=[]), "compositions is empty"),
    (dict(n=2, max_atoms=0), "max_atoms must be >= 1"),
    (dict(n=2, min_distance_factor=1.5), "min_distance_factor"),
    (dict(n=2, cell="supercell"), "cell must be one of"),
    (dict(n=2, workers=0), "workers must be >= 1"),
    (dict(n=2, seed=-3), "seed must be >= 0"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_random_crystals(**{"compositions": COMPOSITIONS, "progress": False, "workers": 1, **kwargs})


def test_impossible_space_group_is_reported():
    # The smallest orbit of Fd-3c has 32 atoms in the conventional cell.
    with pytest.raises(ValueError, match=r"no space group with positive weight can be filled within "
                                         r"max_atoms=20 atoms per conventional cell \(228: no composition fits"):
        generate_random_crystals(2, space_groups={228: 1.0}, compositions=COMPOSITIONS, max_atoms=20,
                                 cell="conventional", progress=False, workers=1)


def test_groups_that_cannot_be_exact_are_dropped_with_a_warning():
    # Below its 48-fold general position every Wyckoff position of Pn-3n (222) is invariant
    # under the I-centring: within 40 atoms anything built in it is Im-3m (229).
    weights = {221: 1.0, 222: 1.0, 229: 1.0}
    draw = dict(weights=weights, compositions=COMPOSITIONS, max_atoms=40)
    assert {space_group_of(i, **draw) for i in range(100)} == {221, 229}
    with pytest.warns(RuntimeWarning, match=r"cannot be filled within max_atoms=40 .*222 \(.*give space group 229"):
        got = generate_random_crystals(2, space_groups=weights, compositions=COMPOSITIONS, max_atoms=40,
                                       progress=False, workers=1)
    assert all(c.space_group in (221, 229) and xf.space_group(c.structure)[0] == c.space_group for c in got)
    # With room for the general position it is kept.
    assert 222 in {space_group_of(i, **{**draw, "max_atoms": 96}) for i in range(100)}


def test_zero_crystals():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert generate_random_crystals(0, compositions=COMPOSITIONS, progress=False) == []


# ----------------------------------------------------------------------------
# on_failure="skip"
# ----------------------------------------------------------------------------

# With one attempt per index, index 6 of seed 7 finds no Pm-3m crystal (checked against generate_one below).
SKIP = dict(seed=7, space_groups={221: 1.0}, compositions=COMPOSITIONS, max_atoms=20, max_attempts=1,
            progress=False, workers=1)


def test_skip_leaves_out_failed_indices_deterministically():
    with pytest.warns(RuntimeWarning, match=r"1 of 4 indices found no crystal in 1 attempt and were left out "
                                            r"\(on_failure='skip'; space groups: 221 x1\)"):
        got = generate_random_crystals(4, start=4, on_failure="skip", **SKIP)
    assert isinstance(got, rc.GeneratedCrystals)
    assert [c.index for c in got] == [4, 5, 7] and got.skipped == ((6, 221),)
    assert got.skipped_by_space_group == {221: 1}
    one = dict(seed=7, weights={221: 1.0}, compositions=COMPOSITIONS, max_atoms=20, max_attempts=1)
    for i in range(4, 8):  # each index is exactly generate_one (first stream, max_attempts attempts)
        ref = generate_one(i, **one)
        if i == 6:
            assert ref is None
        else:
            same(got[[c.index for c in got].index(i)], ref)
    # per (seed, index): split runs give the same crystals and skips
    with pytest.warns(RuntimeWarning, match="left out"):
        tail = generate_random_crystals(2, start=6, on_failure="skip", **SKIP)
    head = generate_random_crystals(2, start=4, on_failure="skip", **SKIP)
    assert head.skipped == () and tail.skipped == ((6, 221),)
    for a, b in zip(got, list(head) + list(tail)):
        same(a, b)
    # the default retries index 6 over further streams: exactly n, never skipped
    with pytest.warns(RuntimeWarning, match="completed from later attempt streams"):
        full = generate_random_crystals(4, start=4, **SKIP)
    assert [c.index for c in full] == [4, 5, 6, 7] and full.skipped == ()
    assert full[2].attempts > 1


def test_on_failure_must_be_raise_or_skip():
    with pytest.raises(ValueError, match="on_failure must be 'raise'"):
        generate_random_crystals(1, on_failure="ignore", **SKIP)
