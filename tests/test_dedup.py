"""Duplicate detection (xrdflow.data.dedup): planted copies, polymorphs, leakage checks."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import xrdflow as xf
from xrdflow import _core
from xrdflow.data import bundled_dataset
from xrdflow.data.dedup import (DuplicateReport, check_no_leakage, composition_key, cross_duplicates,
                                find_duplicates, fingerprints, id_overlap, similarity_matrix,
                                structure_keys)
from xrdflow.symmetry import _sites

from conftest import STRUCTURES_DIR


# ----------------------------------------------------------------------------
# planted copies
# ----------------------------------------------------------------------------


def _copy(s, lattice, frac, perm=None, label=""):
    p = np.arange(len(s)) if perm is None else perm
    return xf.Structure(lattice, frac, s.numbers[p], s.charges[p], s.occupancy[p], s.b_iso[p], label)


def other_setting(s, P=((1, 1, 0), (0, 1, 1), (0, 0, 1)), shift=(0.13, 0.27, 0.41)):
    """The same crystal in another basis (integer unimodular P) with another origin."""
    P = np.array(P, dtype=float)
    assert round(np.linalg.det(P)) == 1
    frac = np.mod(s.frac @ np.linalg.inv(P) + np.array(shift), 1.0)
    return _copy(s, P @ s.lattice, frac, label=s.label + "/setting")


def supercell(s, n=(2, 1, 1)):
    shifts = np.array(list(itertools.product(*(range(k) for k in n))), dtype=float)
    frac = ((s.frac[None] + shifts[:, None]) / np.array(n, dtype=float)).reshape(-1, 3)
    perm = np.tile(np.arange(len(s)), len(shifts))
    return _copy(s, s.lattice * np.array(n, dtype=float)[:, None], frac, perm, s.label + "/supercell")


def permuted(s, seed=0):
    perm = np.random.default_rng(seed).permutation(len(s))
    return _copy(s, s.lattice, s.frac[perm], perm, s.label + "/permuted")


def strained(s, iso=0.01, aniso=(0.0, 0.0, 0.005)):
    """Isotropic strain ``iso`` plus a Cartesian strain diag(``aniso``) averaged over the point group.

    Averaging (eps -> mean C^T eps C over the Cartesian rotations C of the
    crystal) keeps the space group: an arbitrary anisotropic strain would turn
    a tetragonal crystal orthorhombic, i.e. into another candidate key, which by
    design is a distorted variant rather than a duplicate.  Returns the copy and
    the largest anisotropic strain that survived the averaging.
    """
    positions, types = _sites(s)
    rotations, _ = _core.find_symmetry(s.lattice, np.ascontiguousarray(positions), types, 1e-3)
    lat_t = s.lattice.T
    eps = np.diag(np.array(aniso, dtype=float))
    cart = [lat_t @ r @ np.linalg.inv(lat_t) for r in rotations.astype(float)]
    eps = sum(c.T @ eps @ c for c in cart) / len(cart)
    lattice = s.lattice @ ((1.0 + iso) * np.eye(3) + eps)
    return _copy(s, lattice, s.frac, label=s.label + "/strained"), float(np.abs(np.linalg.eigvalsh(eps)).max())


@pytest.fixture(scope="module")
def sample():
    """The first 30 structures of the bundled validation split (distinct MP material ids)."""
    res = bundled_dataset("val", limit=None)
    return res.structures[:30], res.ids[:30]


def _well_defined_symmetry(s):
    """Same space group from 1e-4 to 1e-2 angstrom: far from any tolerance edge."""
    return len({xf.space_group(s, p)[0] for p in (1e-4, 1e-3, 1e-2)}) == 1


def test_sample_has_no_duplicates(sample):
    structures, ids = sample
    report = find_duplicates(structures, ids=ids)
    assert report.groups == [] and report.n_duplicates == 0
    assert report.kept == list(range(len(structures)))


def test_planted_duplicates_are_found(sample):
    structures, ids = sample
    # The strained copy needs a crystal whose point group allows an anisotropic strain.
    target = next(i for i, s in enumerate(structures)
                  if xf.space_group(s)[0] < 195 and _well_defined_symmetry(s) and i not in (0, 1, 2))
    strained_copy, anisotropy = strained(structures[target])
    assert anisotropy >= 0.004  # the anisotropic part was not averaged away
    planted = {
        0: other_setting(structures[0]),
        1: supercell(structures[1]),
        target: strained_copy,
        2: permuted(structures[2]),
    }
    assert len(planted[1]) == 2 * len(structures[1])
    assert not np.allclose(planted[0].lattice, structures[0].lattice)
    everything = list(structures) + list(planted.values())
    all_ids = list(ids) + [c.label for c in planted.values()]
    report = find_duplicates(everything, ids=all_ids)

    expected = sorted([orig, len(structures) + k] for k, orig in enumerate(planted))
    assert report.groups == expected, report.summary(10)
    assert report.n_duplicates == len(planted)
    assert report.kept == list(range(len(structures)))  # originals come first: they are kept
    assert isinstance(report, DuplicateReport)
    text = report.summary()
    assert f"{len(planted)} duplicate groups" in text and ids[0] in text


def test_copies_keep_key_and_fingerprint(sample):
    structures, _ = sample
    s = structures[5]
    copies = [other_setting(s), supercell(s, (1, 2, 1)), permuted(s, 3)]
    keys, volumes = structure_keys([s] + copies)
    assert all(k == keys[0] for k in keys)
    np.testing.assert_allclose(volumes, volumes[0], rtol=1e-9)
    fp = fingerprints([s] + copies)
    assert fp.shape[0] == 4 and fp.shape[1] >= 2
    np.testing.assert_allclose(np.linalg.norm(fp, axis=2), 1.0, rtol=1e-5)
    assert np.all(similarity_matrix(fp[:1], fp[1:]) > 0.999)


def test_composition_key():
    s = xf.Structure.from_arrays(np.eye(3) * 4.0, [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0]],
                                 ["Ga", "Ga", "Te", "Te"])
    assert composition_key(s) == ((31, 1), (52, 1))
    mixed = xf.Structure.from_arrays(np.eye(3) * 4.0, [[0, 0, 0], [0, 0, 0], [0.5, 0.5, 0.5]],
                                     ["Ag", "Cu", "S"], occupancy=[0.02, 0.98, 1.0])
    assert composition_key(mixed) == ((16, 0.5), (29, 0.49), (47, 0.01))


def test_element_swap_is_not_a_duplicate():
    """Sn/Sb swapped between the A and B sites of a cubic perovskite: X-ray twins, different crystals."""
    faces = [[0.5, 0, 0.5], [0.5, 0.5, 0], [0, 0.5, 0.5]]
    a = xf.Structure.from_arrays(np.eye(3) * 4.0, [[0, 0, 0], [0.5, 0.5, 0.5]] + faces, ["Sn", "Sb", "O", "O", "O"])
    b = xf.Structure.from_arrays(np.eye(3) * 4.0, [[0, 0, 0], [0.5, 0.5, 0.5]] + faces, ["Sb", "Sn", "O", "O", "O"])
    fp = fingerprints([a, b])
    assert fp[0, 0] @ fp[1, 0] > 0.99  # the X-ray channel alone would call them duplicates
    assert similarity_matrix(fp[:1], fp[1:])[0, 0] < 0.95  # an element-highlight channel does not
    assert find_duplicates([a, b]).groups == []


def test_volume_tolerance_separates_compressed_copy(sample):
    structures, _ = sample
    s = structures[4]
    squeezed = _copy(s, s.lattice * 0.96, s.frac, label="squeezed")  # -11.5 % volume, same pattern shape
    assert find_duplicates([s, squeezed]).groups == []
    assert find_duplicates([s, squeezed], volume_tolerance=0.15).groups == [[0, 1]]


def test_equal_ids_are_duplicates_and_bad_input(sample):
    structures, ids = sample
    report = find_duplicates(structures[:3], ids=[ids[0], ids[1], ids[0]])
    assert report.groups == [[0, 2]] and report.kept == [0, 1]
    assert find_duplicates([]).kept == []
    with pytest.raises(ValueError, match="ids"):
        find_duplicates(structures[:3], ids=ids[:2])
    with pytest.raises(ValueError, match="similarity"):
        find_duplicates(structures[:3], similarity=2.0)
    with pytest.raises(TypeError):
        find_duplicates(structures[0])


# ----------------------------------------------------------------------------
# polymorphs: carbon_24
# ----------------------------------------------------------------------------


def test_carbon24_flags_only_true_matches():
    """All 200 structures are carbon: only symmetry, volume and pattern tell them apart.

    carbon_24 (AIRSS structures relaxed with DFT) holds many entries that relaxed
    into the same minimum, so some pairs *are* duplicates.  Every pair flagged
    must be a pymatgen StructureMatcher match (no false positive).  The matcher
    runs with attempt_supercell=True because the same crystal appears with 6 and
    with 8 atoms in the cell, and the noisy cells do not always reduce to a
    common primitive cell at pymatgen's tolerance.  Recall against the matcher
    is reported; it is far from 1 by design: the matcher's default tolerances
    (ltol 0.2, stol 0.3, 5 degrees) accept distortions that change the space
    group at 1e-3 angstrom or the pattern, which this module calls different.
    """
    pytest.importorskip("pymatgen.analysis.structure_matcher")
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

    path = STRUCTURES_DIR / "carbon24_test.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    from xrdflow.data import load_structures

    structures = load_structures(path, limit=200, progress=False, workers=1).structures
    assert len(structures) == 200 and all(set(s.numbers.tolist()) == {6} for s in structures)
    flagged = [(i, j) for i, j in cross_duplicates(structures, structures) if i < j]
    report = find_duplicates(structures)
    assert report.groups == _components(flagged)  # the groups are the connected flagged pairs

    pmg = [PmgStructure(Lattice(s.lattice), ["C"] * len(s), s.frac) for s in structures]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matcher = StructureMatcher(attempt_supercell=True)
        false_positives = [(i, j) for i, j in flagged if not matcher.fit(pmg[i], pmg[j])]
        groups = StructureMatcher().group_structures(pmg)
    position = {id(p): k for k, p in enumerate(pmg)}
    matches = set()
    for g in groups:
        members = sorted(position[id(p)] for p in g)
        matches |= set(itertools.combinations(members, 2))
    recall = len(set(flagged) & matches) / max(len(matches), 1)
    print(f"\ncarbon_24 (200): {len(flagged)} pairs flagged, {len(false_positives)} not StructureMatcher "
          f"matches; {len(matches)} StructureMatcher pairs, recall {recall:.2f}; "
          f"{report.n_duplicates} duplicates in {len(report.groups)} groups")
    assert false_positives == []
    assert len(flagged) > 0
    assert recall > 0.3


def test_blocks_and_batches_do_not_change_the_result(monkeypatch):
    """Gram blocks and render batches smaller than the key groups give the same pairs."""
    from xrdflow.data import dedup, load_structures

    path = STRUCTURES_DIR / "carbon24_val.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    structures = load_structures(path, limit=120, progress=False, workers=1).structures
    reference = find_duplicates(structures)
    pairs = cross_duplicates(structures[:60], structures[60:])
    assert reference.groups and pairs
    monkeypatch.setattr(dedup, "_BLOCK", 3)
    monkeypatch.setattr(dedup, "RENDER_BATCH", 5)
    assert find_duplicates(structures) == reference
    assert cross_duplicates(structures[:60], structures[60:]) == pairs


def _components(pairs):
    """Connected components (sorted lists, >= 2 members) of a pair list, ordered by first member."""
    parent = {}

    def find(i):
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    comps = {}
    for i in parent:
        comps.setdefault(find(i), []).append(i)
    return sorted(sorted(c) for c in comps.values())


# ----------------------------------------------------------------------------
# train / test leakage
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_test():
    train = bundled_dataset("train", limit=None)
    test = bundled_dataset("test", limit=None)
    return train.structures[:20], train.ids[:20], test.structures[:10], test.ids[:10]


def test_no_leakage_between_distinct_sets(train_test):
    train, train_ids, test, test_ids = train_test
    assert cross_duplicates(train, test) == []
    assert id_overlap(train_ids, test_ids) == []
    check_no_leakage(train, test, train_ids=train_ids, test_ids=test_ids)  # does not raise


def test_strained_copy_leaks(train_test):
    train, train_ids, test, test_ids = train_test
    k = next(i for i, s in enumerate(train) if _well_defined_symmetry(s))
    leaky, _ = strained(train[k], iso=0.01, aniso=(0.005, 0.0, 0.0))
    leaky = _copy(leaky, leaky.lattice, leaky.frac, label="leaky-copy")
    test2 = list(test) + [leaky]
    assert cross_duplicates(train, test2) == [(k, len(test))]
    with pytest.raises(ValueError, match=r"^1 test structures leak into the training set: leaky-copy") as err:
        check_no_leakage(train, test2)
    assert train[k].label in str(err.value)  # names the training structure it copies
    ids2 = list(test_ids) + ["new-id"]
    with pytest.raises(ValueError, match=r"new-id \(duplicate of train " + train_ids[k]):
        check_no_leakage(train, test2, train_ids=train_ids, test_ids=ids2)


def test_id_overlap_is_leakage(train_test):
    train, train_ids, test, test_ids = train_test
    ids = list(test_ids)
    ids[4] = train_ids[7]
    ids.append(train_ids[7])
    assert id_overlap(train_ids, ids) == [train_ids[7]]
    assert id_overlap(["a", "b", "c"], ["c", "x", "a", "c"]) == ["c", "a"]
    with pytest.raises(ValueError, match=rf"^1 test structures leak .*{train_ids[7]} \(same id\)"):
        check_no_leakage(train, test, train_ids=train_ids, test_ids=ids[:10])
