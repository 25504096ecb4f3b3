"""Random crystals balanced over the 230 space groups, made with PyXtal.

Databases of real structures are heavily biased: a handful of space groups
(Fm-3m, P6_3/mmc, Pnma, P2_1/c, ...) hold most entries while many groups have
few or none, so a classifier trained on them learns the database's label
distribution instead of the mapping from pattern to symmetry.  Following the
"balanced random crystals" approach (random crystals built from the symmetry
operations of each group, e.g. Schopmans, Reiser & Friederich 2023, Digital
Discovery 2, 1414), this module draws the space group from chosen weights
(uniform by default), takes a composition from real data and lets PyXtal place
atoms on Wyckoff positions of that group::

    from xrdflow.data.random_crystals import generate_random_crystals

    crystals = generate_random_crystals(1000, seed=0)        # uniform over the 230 groups
    crystals[0].structure, crystals[0].space_group           # xf.Structure, int
    more = generate_random_crystals(1000, seed=0, start=1000)  # the next 1000, same stream

PyXtal is an optional dependency, imported on first use
(``pip install pyxtal`` or ``pip install xrdflow[random]``).

How one crystal is made
-----------------------
Crystal ``index`` of the sequence with ``seed`` is a function of
``(seed, index)`` and the settings alone (weights, compositions, max_atoms,
...), never of the worker count, the chunking or of which other indices are
generated in the same call:

1. ``rng = numpy.random.Generator(PCG64([seed, index]))``; its first draw picks
   the space group from the weights, less the groups that cannot be filled
   (below); :func:`space_group_of` gives it without generating anything.
2. A composition is drawn uniformly from the list of compositions (by default
   the reduced formulas of the bundled MP-20 subset, so common stoichiometries
   such as ABX2 are common here too), restricted to those that fit the group:
   for the composition's counts per formula unit ``k`` the numbers of formula
   units ``m`` for which PyXtal's Wyckoff check (``Group.check_compatible``)
   accepts the counts ``m k`` in the conventional cell and the returned cell
   (see ``cell``) has at most ``max_atoms`` atoms.  ``m`` is drawn from those
   with probability proportional to 1/m: real crystals mostly have few formula
   units per cell, and a uniform ``m`` would put most cells near
   ``max_atoms``, where PyXtal is slowest.  The Wyckoff check is cached per
   process, so drawing is cheap.
3. PyXtal builds the crystal (``pyxtal.from_random(..., random_state=rng)``:
   PyXtal draws everything from that generator) with volume factor
   ``volume_factor``, a distance tolerance matrix set to the rule below, and
   at most ``COORDINATE_BUDGET`` sets of trial coordinates (see
   :func:`_budgeted_class`).
4. The crystal is accepted when its minimum interatomic distance obeys the rule
   and spglib finds exactly the requested space group at every tolerance in
   ``SYMPREC_CHECKS`` (0.001, 0.01 and 0.1 angstrom).  PyXtal places atoms on
   the group's Wyckoff positions, but a structure whose atoms all sit on
   special positions often has *more* symmetry than asked for: P432 (207)
   with atoms on 1a, 1b, 3c, 3d, 8g and 12h is Pm-3m (221), and Pn-3n (222)
   with at most 40 atoms is Im-3m (229) in almost every try.  About a quarter
   of all attempts fail this way, nearly all in cubic groups (203, 207, 209,
   211, 222, 226, ...), so this check is what makes the label right.
5. Steps 2-4 are one *attempt*; up to ``max_attempts`` attempts continue from
   the same generator.

When every attempt fails, :func:`generate_one` returns None.
:func:`generate_random_crystals` then continues the same index with further
*attempt streams*, ``Generator(PCG64([seed, index, s]))`` for s = 1, 2, ...
(up to ``MAX_STREAMS``), keeping the space group drawn in step 1.  The result
therefore always holds exactly ``n`` crystals, still deterministic per index,
and the space-group balance is not biased against groups that are hard to
fill.  Indices that needed a second stream are reported in one warning with
their count; an index that exhausts every stream is an error
(RuntimeError), never a silently missing crystal.
:attr:`RandomCrystal.attempts` counts the attempts over all streams.

With ``on_failure="skip"`` an index gets only its first stream, i.e. at most
``max_attempts`` attempts (exactly :func:`generate_one` with the same
settings), and an index whose attempts all fail is left out instead: the
result holds the crystals found, in index order, and its
:attr:`GeneratedCrystals.skipped` lists the ``(index, space group)`` pairs
left out, summarized per space group in one RuntimeWarning.  This bounds the
time per index (at few atoms some high-symmetry groups, e.g. Fd-3c (228) at
24 atoms, need hundreds of attempts) at the price of under-representing such
groups.  Which indices are skipped is again a function of ``(seed, index)``
and the settings, so ``start=`` resumes and the worker count changes nothing;
a crystal found in skip mode is the same crystal the default mode returns for
that index whenever the default mode finds it in its first stream.

Because of this, an interrupted generation resumes by generating only the
missing indices (``start=``), and ``generate_random_crystals(n, start=k)``
returns exactly items ``k .. k+n-1`` of a longer run with the same settings.
The same holds across machines as long as numpy, PyXtal and spglib are the
same versions (their algorithms define what a seed produces).

Groups that cannot be filled
----------------------------
Before drawing, each group with positive weight is checked once (cached):
a group gets no crystals, its weight going to the others, with one
RuntimeWarning naming it and why, when no composition fits its Wyckoff
positions within ``max_atoms`` (e.g. Fd-3c with conventional cells of at
most 40 atoms), or when every crystal within ``max_atoms`` would have a
larger group.  The second is decided by a test crystal holding every Wyckoff
position that fits (:func:`_symmetry_of_all_sites`): at the defaults (40 atoms,
primitive cells) this drops exactly one group, Pn-3n (222), whose positions
below the 48-fold general one all keep the I-centring of Im-3m; with
conventional cells of 40 atoms it drops 196, 202, 203, 209, 210, 219, 222,
226 and 228; at 20 atoms per primitive cell 203, 207, 209, 219, 222, 226 and
228.  If every requested group is dropped, ValueError.  The check is a
necessary condition only; some cubic groups pass it yet fill rarely (Fd-3
(203) and F432 (209) take tens of attempts, most of them rejected for higher
symmetry).

Distances
---------
PyXtal's own tolerance for "atomic" crystals is 0.5 x the sum of covalent
radii, which lets through bonds far shorter than any real crystal has (with it,
86 % of PyXtal's crystals over the 230 groups failed the rule below).  The tolerance matrix handed
to PyXtal is therefore set to ``min_distance_factor`` x (r_i + r_j) with
gemmi's covalent radii (Cordero et al. 2008) for the pairs of the composition,
so PyXtal places atoms under the rule itself, and
:func:`min_distance_ratio` checks the finished cell as a safety net.  Distances
are measured with periodic images: random cells are small (a few angstrom
along an axis), and an atom's nearest neighbour is often an image across a
cell face, or even the atom's own image one lattice vector away, which a
distance computed inside one cell would miss.

Cells
-----
With ``cell="primitive"`` (default) the structure is the primitive cell
(spglib) and ``max_atoms`` bounds its atom count; with ``"conventional"`` it
is PyXtal's conventional cell (C-, I-, F-centred, or hexagonal axes for R
groups), 2-4 times larger for centred groups.  The powder pattern is the same;
the primitive cell is cheaper to simulate, and only with it can every group
be filled at small sizes: the smallest orbit of Fd-3c (228) has 32 atoms in
the conventional cell, so a binary compound needs 64, but only 16 in the
primitive cell.

Parallelism
-----------
Indices are sent in chunks of ``CHUNK_SIZE`` to a
:class:`concurrent.futures.ProcessPoolExecutor`, started with the
``forkserver`` method where the platform has it, else ``spawn`` (never
``fork``, which can deadlock a process that runs threads; see
:mod:`xrdflow.data.readers`); the settings reach each worker once through the
pool's initializer.  A crystal takes from a few milliseconds to seconds
(PyXtal's retries in some cubic groups), so chunks are small and at most
``2 x workers`` are in flight.  Results come back in index order.  As with any
spawn-based multiprocessing, a script that uses workers must guard its top
level with ``if __name__ == "__main__":``.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import math
import numbers as _numbers
import warnings
from dataclasses import dataclass
from typing import Mapping

import gemmi
import numpy as np

from ..structure import Structure, StructureError
from ..symmetry import space_group as _space_group
from .readers import _available_cpus, _mp_context

__all__ = [
    "RandomCrystal",
    "space_group_weights",
    "choose_space_group",
    "space_group_of",
    "compositions_from",
    "min_distance_ratio",
    "generate_one",
    "generate_random_crystals",
    "GeneratedCrystals",
]

N_SPACE_GROUPS = 230
#: Indices per task sent to a worker process.
CHUNK_SIZE = 4
#: Default PyXtal attempts per index and attempt stream (max_attempts).
DEFAULT_MAX_ATTEMPTS = 50
#: Attempt streams tried per index by generate_random_crystals before giving up (on_failure="raise").
MAX_STREAMS = 20
#: Coordinate sets PyXtal may try per attempt (its own limit is 40 lattices x 10 sets).
COORDINATE_BUDGET = 10
#: spglib tolerances (angstrom) at which a crystal must show exactly the requested group.
SYMPREC_CHECKS = (1e-3, 1e-2, 1e-1)
#: Composition draws (cheap, cached checks) before listing every composition that fits.
_MAX_COMPOSITION_DRAWS = 1000
_CELLS = ("primitive", "conventional")
_ON_FAILURE = ("raise", "skip")
_COMPAT_CACHE_SIZE = 200_000


# ----------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomCrystal:
    """One generated crystal.

    structure: the crystal, labelled ``"random-<seed>-<index>"``.
    space_group: the space group it was built in (and that spglib finds).
    index: its position in the requested sequence.
    attempts: PyXtal attempts used, over all attempt streams.
    """

    structure: Structure
    space_group: int
    index: int
    attempts: int


class GeneratedCrystals(list):
    """What :func:`generate_random_crystals` returns: a list of :class:`RandomCrystal`, in index order.

    skipped: ``(index, space_group)`` pairs of the requested indices that found
        no crystal and were left out, in index order (only with
        ``on_failure="skip"``; empty otherwise).
    """

    def __init__(self, crystals=(), skipped=()):
        super().__init__(crystals)
        self.skipped: tuple[tuple[int, int], ...] = tuple((int(i), int(sg)) for i, sg in skipped)

    @property
    def skipped_by_space_group(self) -> dict[int, int]:
        """{space group: number of skipped indices}, by space group number."""
        return dict(sorted(collections.Counter(sg for _, sg in self.skipped).items()))

    def __repr__(self) -> str:
        return f"GeneratedCrystals({list.__repr__(self)}, skipped={self.skipped!r})"


# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------


def _pyxtal():
    """The pyxtal module, or an ImportError that says how to install it."""
    try:
        import pyxtal
    except ImportError:
        raise ImportError(
            "random crystals need PyXtal: pip install pyxtal (or pip install 'xrdflow[random]')"
        ) from None
    return pyxtal


def _is_int(value) -> bool:
    return isinstance(value, _numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_int(name, value, minimum):
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name, value, low, high, low_open=True, high_open=True):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, not {type(value).__name__} ({value!r})") from None
    too_low = x <= low if low_open else x < low
    too_high = x >= high if high_open else x > high
    if not math.isfinite(x) or too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return x


# ----------------------------------------------------------------------------
# space groups
# ----------------------------------------------------------------------------


def space_group_weights(kind="uniform") -> np.ndarray:
    """Normalized probabilities of the 230 space groups, shape (230,) (entry 0 is group 1).

    kind:
        ``"uniform"``: every group 1/230 (the balanced set).
        ``"bundled"``: the frequencies of the bundled MP-20 subset (its
        ``spacegroup.number`` column), to compare with the database bias;
        groups absent from it get 0.
        a dict ``{space group number: weight}``: groups not named get 0.
        an array of 230 weights (entry 0 is group 1).
    Weights must be finite and >= 0 with a positive sum; ValueError otherwise,
    and for a space group number outside 1-230.
    """
    if isinstance(kind, str):
        if kind == "uniform":
            return np.full(N_SPACE_GROUPS, 1.0 / N_SPACE_GROUPS)
        if kind == "bundled":
            from .readers import bundled_dataset

            numbers = bundled_dataset(workers=1).columns["spacegroup.number"]
            counts = np.bincount(np.array([int(x) for x in numbers]) - 1, minlength=N_SPACE_GROUPS)
            return counts / counts.sum()
        raise ValueError(f"unknown space-group weights {kind!r}: use 'uniform', 'bundled', "
                         "a dict {space group number: weight} or an array of 230 weights")
    if isinstance(kind, Mapping):
        weights = np.zeros(N_SPACE_GROUPS)
        for sg, w in kind.items():
            if not _is_int(sg) or not 1 <= sg <= N_SPACE_GROUPS:
                raise ValueError(f"unknown space group {sg!r} in the weights: space groups are "
                                 f"the integers 1-{N_SPACE_GROUPS}")
            try:
                value = float(w)
            except (TypeError, ValueError):
                raise ValueError(f"weight of space group {sg} must be a number, not {w!r}") from None
            weights[int(sg) - 1] = value
    else:
        try:
            weights = np.array(kind, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"space-group weights must be 'uniform', 'bundled', a dict or an array "
                            f"of 230 numbers, not {type(kind).__name__}") from None
        if weights.shape != (N_SPACE_GROUPS,):
            raise ValueError(f"space-group weight array has shape {weights.shape}; give 230 weights "
                             "(entry 0 is space group 1) or a dict {space group number: weight}")
    bad = np.flatnonzero(~np.isfinite(weights))
    if bad.size:
        raise ValueError(f"weight of space group {bad[0] + 1} is {weights[bad[0]]}; weights must be finite")
    bad = np.flatnonzero(weights < 0)
    if bad.size:
        raise ValueError(f"negative weight {weights[bad[0]]:g} for space group {bad[0] + 1}; "
                         "weights must be >= 0")
    total = weights.sum()
    if not total > 0:
        raise ValueError("the space-group weights sum to 0; give at least one positive weight")
    return weights / total


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf


def choose_space_group(rng: np.random.Generator, weights: np.ndarray) -> int:
    """One space group drawn from ``weights`` (as from :func:`space_group_weights`) with one ``rng.random()``."""
    cdf = _cdf(np.asarray(weights, dtype=np.float64))
    return _pick(rng, cdf)


def _pick(rng, cdf) -> int:
    # The first group whose cumulative weight exceeds u in [0, 1): never a zero-weight
    # group, since its cdf equals its predecessor's (and cdf[-1] is exactly 1).
    return min(int(np.searchsorted(cdf, rng.random(), side="right")), N_SPACE_GROUPS - 1) + 1


def _index_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    key = [seed, index] if stream == 0 else [seed, index, stream]
    return np.random.Generator(np.random.PCG64(key))


def space_group_of(index: int, *, seed: int = 0, weights="uniform", compositions=None, max_atoms: int = 40,
                   cell: str = "primitive") -> int:
    """The space group that crystal ``index`` of the sequence with ``seed`` gets (nothing is generated).

    The arguments are those of :func:`generate_random_crystals` that decide
    it: the weights, and the compositions, ``max_atoms`` and ``cell`` that
    decide which groups cannot be filled and get no weight (needs PyXtal).
    """
    ctx = _make_context(seed=seed, weights=weights, compositions=compositions, max_atoms=max_atoms,
                        min_distance_factor=0.7, volume_factor=1.0, max_attempts=1, cell=cell)
    _pyxtal()
    return _pick(_index_rng(ctx.seed, _check_int("index", index, 0)), ctx.prepare().cdf)


# ----------------------------------------------------------------------------
# compositions
# ----------------------------------------------------------------------------


def compositions_from(structures) -> list[dict[str, int]]:
    """Reduced compositions, element -> count per formula unit, one per structure.

    structures: :class:`xrdflow.Structure` objects (or a
    :class:`~xrdflow.data.readers.LoadResult`).  Counts are the cell's atoms
    weighted by occupancy, divided by their greatest common divisor
    (``Ga4Te4`` -> ``{'Ga': 1, 'Te': 1}``); elements are in order of atomic
    number.  Structures with non-integer contents (partial occupancies) have
    no integer formula and are skipped with one warning giving their count.
    """
    items = getattr(structures, "structures", structures)
    out, skipped = [], []
    for s in items:
        if not isinstance(s, Structure):
            raise TypeError(f"compositions_from expects xrdflow.Structure objects, not {type(s).__name__}")
        totals = collections.defaultdict(float)
        for z, occ in zip(s.numbers.tolist(), s.occupancy.tolist()):
            totals[z] += occ
        counts = {z: round(v) for z, v in totals.items()}
        if any(abs(totals[z] - counts[z]) > 1e-3 or counts[z] < 1 for z in totals):
            skipped.append(s.label or repr(s))
            continue
        g = math.gcd(*counts.values())
        out.append({gemmi.Element(z).name: counts[z] // g for z in sorted(counts)})
    if skipped:
        warnings.warn(f"{len(skipped)} structures with non-integer contents (partial occupancy) have no "
                      f"integer formula and were skipped, e.g. {', '.join(skipped[:3])}",
                      RuntimeWarning, stacklevel=2)
    return out


@functools.lru_cache(maxsize=1)
def _bundled_compositions() -> tuple[tuple[tuple[str, int], ...], ...]:
    from .readers import bundled_dataset

    return tuple(tuple(c.items()) for c in compositions_from(bundled_dataset(workers=1)))


def _normalize_compositions(compositions) -> tuple[tuple[tuple[str, int], ...], ...]:
    """Validated compositions as tuples of (element, count) pairs."""
    if compositions is None:
        return _bundled_compositions()
    if isinstance(compositions, (str, Mapping)):
        raise TypeError("compositions must be a list of dicts such as [{'Na': 1, 'Cl': 1}], "
                        "not a single " + type(compositions).__name__)
    out = []
    radii = _pyxtal_radii()
    for i, comp in enumerate(compositions):
        if not isinstance(comp, Mapping) or not comp:
            raise ValueError(f"composition {i} is {comp!r}; each composition must be a non-empty dict "
                             "{element: count per formula unit}")
        pairs = []
        for el, count in comp.items():
            if not isinstance(el, str) or gemmi.Element(el).atomic_number == 0 \
                    or gemmi.Element(el).name.lower() != el.strip().lower():
                raise ValueError(f"unknown element {el!r} in composition {i} ({comp!r})")
            name = gemmi.Element(el).name
            if not _is_int(count) or count < 1:
                raise ValueError(f"count of {name} in composition {i} is {count!r}; counts must be "
                                 "positive integers")
            if radii is not None and radii.get(name) is None:
                raise ValueError(f"PyXtal has no covalent radius for {name} (composition {i}); "
                                 "it cannot place this element")
            if gemmi.Element(name).covalent_r <= 0:
                raise ValueError(f"gemmi has no covalent radius for {name} (composition {i})")
            pairs.append((name, int(count)))
        if len({p[0] for p in pairs}) != len(pairs):
            raise ValueError(f"composition {i} ({comp!r}) names an element twice")
        out.append(tuple(pairs))
    if not out:
        raise ValueError("compositions is empty; give at least one composition")
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _pyxtal_radii():
    try:
        from pyxtal.database.element import Element
    except ImportError:
        return None
    out = {}
    for z in range(1, 119):
        name = gemmi.Element(z).name
        try:
            out[name] = Element(name).covalent_radius
        except Exception:  # noqa: BLE001 - element unknown to PyXtal
            out[name] = None
    return out


# ----------------------------------------------------------------------------
# distances
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _covalent_radius(z: int) -> float:
    return float(gemmi.Element(int(z)).covalent_r)


def min_distance_ratio(structure: Structure) -> float:
    """Smallest d_ij / (r_i + r_j) over all pairs of atoms, periodic images included.

    r are gemmi's covalent radii (Cordero et al. 2008).  Every atom is paired
    with every atom of the cell *and its periodic images*, including its own
    images one or more lattice vectors away: in a small cell the nearest
    neighbour is often across a cell face.  Pairs farther apart than the
    largest r_i + r_j of the structure are not examined, so the value is exact
    when below 1 (all that a rule "ratio >= f" with f < 1 needs); otherwise it
    is some value >= 1 (inf if no pair is that close).
    """
    lat = np.asarray(structure.lattice)
    frac = np.asarray(structure.frac)
    r = np.array([_covalent_radius(z) for z in structure.numbers.tolist()])
    n = len(r)
    cutoff = float(2.0 * r.max())
    # |x| <= cutoff bounds the fractional coordinate k by cutoff * |column k of L^-1|;
    # wrapped differences lie in [-0.5, 0.5], hence the extra half cell.
    reach = np.ceil(cutoff * np.linalg.norm(np.linalg.inv(lat), axis=0) + 0.5).astype(int)
    shifts = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"),
                      axis=-1).reshape(-1, 3).astype(np.float64)
    diff = frac[None, :, :] - frac[:, None, :]
    diff -= np.round(diff)
    best = np.full((n, n), np.inf)
    atoms = np.arange(n)
    for block in np.array_split(shifts, max(1, len(shifts) // 64)):
        dist = np.linalg.norm((diff[:, :, None, :] + block[None, None, :, :]) @ lat, axis=-1)
        origin = np.flatnonzero(np.all(block == 0.0, axis=1))
        if origin.size:
            dist[atoms, atoms, origin[0]] = np.inf  # an atom is not its own neighbour
        best = np.minimum(best, dist.min(axis=-1))
    ratio = best / (r[:, None] + r[None, :])
    return float(ratio.min())


# ----------------------------------------------------------------------------
# generation context (one per process and settings)
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _group(sg: int):
    from pyxtal.symmetry import Group

    return Group(sg)


@functools.lru_cache(maxsize=_COMPAT_CACHE_SIZE)
def _multipliers(sg: int, counts: tuple[int, ...], max_atoms: int, cell: str) -> tuple[int, ...]:
    """Numbers of formula units m for which counts*m fits sg's Wyckoff positions within max_atoms."""
    group = _group(sg)
    per_cell = group.cellsize() if cell == "primitive" else 1
    total = sum(counts)
    out = []
    for m in range(1, max_atoms * per_cell // total + 1):
        if group.check_compatible([m * c for c in counts])[0]:
            out.append(m)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _tolerance_matrix(species: tuple[str, ...], factor: float):
    """PyXtal tolerance matrix: factor x (r_i + r_j) with gemmi's radii for the pairs of ``species``."""
    from pyxtal.tolerance import Tol_matrix

    pairs = []
    for i, a in enumerate(species):
        for b in species[i:]:
            pairs.append((a, b, factor * (gemmi.Element(a).covalent_r + gemmi.Element(b).covalent_r)))
    # The base prototype ("atomic", 0.5 x radii) is scaled to the same rule for any other pair.
    return Tol_matrix(*pairs, prototype="atomic", factor=factor / 0.5)


@functools.lru_cache(maxsize=1)
def _check_images_fix():
    """(pyxtal.symmetry, its check_images, a faster equivalent) or None.

    PyXtal 1.1's ``operations.check_images`` builds a default
    ``Tol_matrix(prototype="atomic")`` (a Python loop over ~100 x 100 element
    pairs, about 4 ms) on every call, even when the caller passes ``tol`` and
    the matrix is never read; ``Wyckoff_position.merge`` calls it for every
    trial point, which made it ~60 % of the generation time.  The replacement
    passes one prebuilt default matrix instead: same arguments, same result.
    Applied only while this module calls PyXtal (see :func:`_pyxtal_speedup`),
    and only when the function has the expected signature.
    """
    import inspect

    import pyxtal.symmetry as sym
    from pyxtal.tolerance import Tol_matrix

    original = getattr(sym, "check_images", None)
    try:
        params = list(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        return None
    if params[:7] != ["coords", "species", "lattice", "PBC", "tm", "tol", "d_factor"]:
        return None
    default_tm = Tol_matrix(prototype="atomic")

    def check_images(coords, species, lattice, PBC=None, tm=None, tol=None, d_factor=1.0):
        return original(coords, species, lattice, PBC=PBC, tm=default_tm if tm is None else tm,
                        tol=tol, d_factor=d_factor)

    return sym, original, check_images


@functools.lru_cache(maxsize=1)
def _budgeted_class():
    """(pyxtal module, its random_crystal, a subclass that gives up after COORDINATE_BUDGET sets) or None.

    ``random_crystal.set_crystal`` tries up to 40 lattices (each with a new
    volume) with 10 sets of coordinates each before giving up.  Measured over
    the 230 groups, half of the successful attempts need at most 4 sets, while
    a hopeless one (e.g. a composition too dense for its drawn volume under
    the distance rule) runs all 400, which takes seconds to tens of seconds
    for cells of 30-40 atoms: half of the generation time went there.  The
    subclass stops placing atoms after ``COORDINATE_BUDGET`` sets (the
    remaining cycles only redraw the lattice, which is cheap), so a hopeless
    attempt fails fast and the next attempt draws a new composition and cell
    size.  This changes which crystals come out (a few compositions that need
    many trials are replaced by others), not their validity.
    """
    import pyxtal

    original = getattr(pyxtal, "random_crystal", None)
    if not (isinstance(original, type) and hasattr(original, "_set_coords") and hasattr(original, "set_crystal")):
        return None

    class BudgetedCrystal(original):
        def _set_coords(self):
            self._xrdflow_sets = getattr(self, "_xrdflow_sets", 0) + 1
            if self._xrdflow_sets > COORDINATE_BUDGET:
                return None
            return super()._set_coords()

    return pyxtal, original, BudgetedCrystal


@contextlib.contextmanager
def _pyxtal_speedup():
    """Apply the PyXtal patches above while this module calls PyXtal; restored afterwards."""
    patches = []
    fix = _check_images_fix()
    if fix is not None and fix[0].check_images is fix[1]:
        patches.append((fix[0], "check_images", fix[1], fix[2]))
    budget = _budgeted_class()
    if budget is not None and budget[0].random_crystal is budget[1]:
        patches.append((budget[0], "random_crystal", budget[1], budget[2]))
    for module, name, _, replacement in patches:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for module, name, original, _ in patches:
            setattr(module, name, original)


class _Context:
    """Settings of one generation, with the per-composition data derived from them.

    ``requested`` are the normalized weights asked for; :meth:`prepare` drops
    the groups that cannot be filled (see :func:`_unfillable_groups`) and sets
    ``weights``/``cdf``, the distribution the space groups are drawn from.
    """

    def __init__(self, seed, weights, compositions, max_atoms, min_distance_factor, volume_factor,
                 max_attempts, cell, dropped=None):
        self.seed = seed
        self.requested = weights
        self.compositions = compositions
        self.species = [tuple(p[0] for p in c) for c in compositions]
        self.counts = [tuple(p[1] for p in c) for c in compositions]
        self.max_atoms = max_atoms
        self.min_distance_factor = min_distance_factor
        self.volume_factor = volume_factor
        self.max_attempts = max_attempts
        self.cell = cell
        self.dropped = dropped  # {space group: reason}; None until prepare()
        self.weights = self.cdf = None
        if dropped is not None:
            self._set_weights()

    def _set_weights(self):
        w = self.requested.copy()
        for sg in self.dropped:
            w[sg - 1] = 0.0
        if not w.sum() > 0:
            reasons = "; ".join(f"{sg}: {why}" for sg, why in sorted(self.dropped.items())[:10])
            raise ValueError(f"no space group with positive weight can be filled within "
                             f"max_atoms={self.max_atoms} atoms per {self.cell} cell ({reasons}); raise "
                             "max_atoms, use cell='primitive' or give other compositions or groups")
        self.weights = w / w.sum()
        self.cdf = _cdf(self.weights)

    def prepare(self) -> "_Context":
        """Find the requested groups that cannot be filled and the weights without them (once)."""
        if self.dropped is None:
            groups = tuple((np.flatnonzero(self.requested > 0) + 1).tolist())
            self.dropped = dict(_unfillable_groups(groups, self.compositions, self.max_atoms, self.cell))
            self._set_weights()
        return self

    def warn_dropped(self, stacklevel=3):
        if self.dropped:
            listed = "; ".join(f"{sg} ({why})" for sg, why in sorted(self.dropped.items()))
            warnings.warn(
                f"{len(self.dropped)} space group(s) with positive weight cannot be filled within "
                f"max_atoms={self.max_atoms} atoms per {self.cell} cell and get no crystals, their weight "
                f"going to the others: {listed}. Raise max_atoms to include them.",
                RuntimeWarning, stacklevel=stacklevel)

    def config(self) -> dict:
        return dict(seed=self.seed, weights=self.requested, compositions=self.compositions,
                    max_atoms=self.max_atoms, min_distance_factor=self.min_distance_factor,
                    volume_factor=self.volume_factor, max_attempts=self.max_attempts, cell=self.cell,
                    dropped=self.prepare().dropped)

    def multipliers(self, sg: int, j: int) -> tuple[int, ...]:
        return _multipliers(sg, self.counts[j], self.max_atoms, self.cell)

    def fitting(self, sg: int) -> list[int]:
        """Indices of every composition with at least one fitting number of formula units."""
        by_counts = {}
        out = []
        for j, counts in enumerate(self.counts):
            ok = by_counts.get(counts)
            if ok is None:
                ok = by_counts[counts] = bool(self.multipliers(sg, j))
            if ok:
                out.append(j)
        return out

    def draw_composition(self, rng, sg: int) -> tuple[int, int]:
        """(composition index, formula units), uniform over the compositions that fit sg."""
        n = len(self.compositions)
        for _ in range(_MAX_COMPOSITION_DRAWS):
            j = int(rng.integers(n))
            ms = self.multipliers(sg, j)
            if ms:
                return j, _pick_multiplier(rng, ms)
        fitting = self.fitting(sg)
        if not fitting:  # prepare() drops such groups; only reachable through misuse
            raise ValueError(f"no composition fits space group {sg} within max_atoms={self.max_atoms}")
        j = fitting[int(rng.integers(len(fitting)))]
        return j, _pick_multiplier(rng, self.multipliers(sg, j))


@functools.lru_cache(maxsize=64)
def _unfillable_groups(groups: tuple[int, ...], compositions, max_atoms: int, cell: str) -> tuple:
    """((space group, reason), ...) for the groups that cannot be filled under these settings.

    A group cannot be filled when no composition's counts fit its Wyckoff
    positions within max_atoms (for any number of formula units), or when
    every crystal within max_atoms would have a larger group
    (:func:`_symmetry_of_all_sites`).
    """
    patterns = [counts for counts, _ in
                collections.Counter(tuple(p[1] for p in c) for c in compositions).most_common()]
    out = []
    for sg in groups:
        if not any(_multipliers(sg, counts, max_atoms, cell) for counts in patterns):
            out.append((sg, "no composition fits its Wyckoff positions"))
            continue
        limit = max_atoms * (_group(sg).cellsize() if cell == "primitive" else 1)
        found = _symmetry_of_all_sites(sg, limit)
        if found != sg:
            out.append((sg, f"with at most {limit} atoms in the conventional cell its Wyckoff "
                            f"positions give space group {found} or higher"))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _symmetry_of_all_sites(sg: int, limit: int) -> int:
    """Space group of a test crystal with every Wyckoff position of sg that has <= limit sites.

    A crystal made of some of these positions has at least the symmetry of the
    crystal made of all of them (each position filled by its own element,
    positions with free parameters twice, at generic coordinates in a generic
    lattice of the group's system): fewer atoms can only add symmetry.  So if
    that crystal already has a larger group than sg, no crystal within the
    limit has exactly sg.  Pn-3n (222) is the case at 40 atoms: every
    position below its 48-fold general one is invariant under the
    I-centring, so anything PyXtal builds is Im-3m (229).  (The converse does
    not hold: passing this test does not promise a crystal.)  Returns sg when
    spglib cannot decide (never seen).
    """
    import spglib
    from pyxtal.lattice import Lattice

    group = _group(sg)
    positions = [wp for wp in group if wp.multiplicity <= limit]
    if not positions:
        return 0
    rng = np.random.Generator(np.random.PCG64([sg, limit]))
    for _ in range(5):
        coords, types = [], []
        for wp in positions:
            for _copy in range(2 if wp.get_dof() > 0 else 1):
                point = rng.random(3)
                coords.extend(op.operate(point) for op in wp.ops)
                types.extend([len(set(types)) + 1] * len(wp.ops))
        try:
            lattice = Lattice(group.lattice_type, 30.0 * len(coords), random_state=rng).matrix
        except Exception:  # noqa: BLE001 - PyXtal's VolumeError and the like; try another
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                data = spglib.get_symmetry_dataset((lattice, np.mod(coords, 1.0), types), symprec=1e-3)
            except Exception:  # noqa: BLE001 - SpglibError in newer versions
                data = None
        if data is not None:
            return int(data.number)
    return sg


def _pick_multiplier(rng, ms: tuple[int, ...]) -> int:
    """One of the fitting numbers of formula units, with probability proportional to 1/m."""
    p = 1.0 / np.asarray(ms, dtype=np.float64)
    return ms[min(int(np.searchsorted(np.cumsum(p) / p.sum(), rng.random(), side="right")), len(ms) - 1)]


def _make_context(*, seed, weights, compositions, max_atoms, min_distance_factor, volume_factor,
                  max_attempts, cell) -> _Context:
    seed = _check_int("seed", seed, 0)
    max_atoms = _check_int("max_atoms", max_atoms, 1)
    max_attempts = _check_int("max_attempts", max_attempts, 1)
    min_distance_factor = _check_float("min_distance_factor", min_distance_factor, 0.0, 1.0)
    volume_factor = _check_float("volume_factor", volume_factor, 0.0, 100.0)
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {_CELLS}, not {cell!r}")
    if not (isinstance(weights, np.ndarray) and weights.shape == (N_SPACE_GROUPS,)
            and np.all(weights >= 0) and abs(weights.sum() - 1.0) < 1e-9):
        weights = space_group_weights(weights)
    return _Context(seed, np.asarray(weights, dtype=np.float64), _normalize_compositions(compositions),
                    max_atoms, min_distance_factor, volume_factor, max_attempts, cell)


# ----------------------------------------------------------------------------
# one crystal
# ----------------------------------------------------------------------------


def _to_structure(crystal, sg: int, cell: str, label: str) -> Structure | None:
    """xf.Structure of a PyXtal crystal (primitive cell via spglib when asked for)."""
    s = Structure.from_pymatgen(crystal.to_pymatgen(), label=label)
    if cell == "conventional" or _group(sg).cellsize() == 1:
        return s
    import spglib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        prim = spglib.standardize_cell((np.asarray(s.lattice), np.asarray(s.frac), np.asarray(s.numbers)),
                                       to_primitive=True, no_idealize=True, symprec=SYMPREC_CHECKS[0])
    if prim is None:
        return None
    lattice, frac, numbers = prim
    if len(numbers) * _group(sg).cellsize() != s.n_atoms:
        return None  # extra translations: more symmetry than asked for
    if np.linalg.det(lattice) < 0:
        lattice, frac = -lattice, -frac  # same Cartesian positions, right-handed basis
    return Structure(lattice, frac, numbers, label=label)


def _attempt(ctx: _Context, rng, sg: int, label: str) -> Structure | None:
    """One attempt: a composition, PyXtal, the checks; the Structure or None."""
    pyxtal = _pyxtal()
    j, m = ctx.draw_composition(rng, sg)
    species = list(ctx.species[j])
    num_ions = [m * c for c in ctx.counts[j]]
    crystal = pyxtal.pyxtal()
    with warnings.catch_warnings(), _pyxtal_speedup():
        warnings.simplefilter("ignore")  # PyXtal warns when it enlarges the volume, etc.
        try:
            crystal.from_random(3, sg, species, num_ions, factor=ctx.volume_factor,
                                tm=_tolerance_matrix(ctx.species[j], ctx.min_distance_factor),
                                max_count=1, random_state=rng)
        except Exception:  # noqa: BLE001 - PyXtal signals failure by many exception types
            return None
        if not crystal.valid:
            return None
        try:
            s = _to_structure(crystal, sg, ctx.cell, label)
        except StructureError:  # e.g. a degenerate cell; never seen, but not worth a crash
            return None
    if s is None or s.n_atoms > ctx.max_atoms:
        return None
    if min_distance_ratio(s) < ctx.min_distance_factor:
        return None
    if any(_space_group(s, symprec)[0] != sg for symprec in SYMPREC_CHECKS):
        return None
    return s


def _generate(ctx: _Context, index: int, stream: int, attempts_before: int = 0) -> tuple[RandomCrystal | None, int]:
    """Crystal ``index`` from attempt stream ``stream``: (crystal or None, attempts used)."""
    rng = _index_rng(ctx.seed, index)
    sg = _pick(rng, ctx.prepare().cdf)
    if stream:
        rng = _index_rng(ctx.seed, index, stream)
    label = f"random-{ctx.seed}-{index}"
    for attempt in range(1, ctx.max_attempts + 1):
        s = _attempt(ctx, rng, sg, label)
        if s is not None:
            return RandomCrystal(s, sg, index, attempts_before + attempt), attempt
    return None, ctx.max_attempts


def generate_one(index: int, *, seed: int = 0, weights="uniform", compositions=None, max_atoms: int = 40,
                 min_distance_factor: float = 0.7, volume_factor: float = 1.0,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, cell: str = "primitive", stream: int = 0) -> RandomCrystal | None:
    """Crystal ``index`` of the sequence with ``seed``, or None if ``max_attempts`` attempts fail.

    index: position in the sequence (>= 0); the crystal depends only on
        (seed, index, stream) and the settings.
    weights: space-group weights (anything :func:`space_group_weights` takes,
        or its result).
    compositions: dicts {element: count per formula unit} (e.g. from
        :func:`compositions_from`); None uses the bundled MP-20 subset.
    max_atoms: most atoms in the returned cell (see ``cell``).
    min_distance_factor: reject crystals with two atoms closer than this times
        the sum of their covalent radii (periodic images included), in (0, 1).
    volume_factor: PyXtal's volume factor (cell volume relative to the sum of
        atomic volumes drawn between covalent and van der Waals spheres).
    max_attempts: PyXtal attempts before giving up.
    cell: ``"primitive"`` or ``"conventional"``.
    stream: attempt stream (0 first; see the module docs).
    """
    ctx = _make_context(seed=seed, weights=weights, compositions=compositions, max_atoms=max_atoms,
                        min_distance_factor=min_distance_factor, volume_factor=volume_factor,
                        max_attempts=max_attempts, cell=cell)
    index = _check_int("index", index, 0)
    stream = _check_int("stream", stream, 0)
    _pyxtal()
    ctx.prepare().warn_dropped()
    return _generate(ctx, index, stream)[0]


def _generate_full(ctx: _Context, index: int, max_streams: int = MAX_STREAMS) -> tuple[RandomCrystal | None, int]:
    """Crystal ``index`` over attempt streams 0..max_streams-1: (crystal or None, streams used)."""
    used = 0
    for stream in range(max_streams):
        crystal, n = _generate(ctx, index, stream, used)
        used += n
        if crystal is not None:
            return crystal, stream + 1
    return None, max_streams


# ----------------------------------------------------------------------------
# many crystals
# ----------------------------------------------------------------------------

_WORKER_CONTEXT: _Context | None = None


def _init_worker(config: dict) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = _Context(**config)


def _worker_chunk(indices: list[int], max_streams: int = MAX_STREAMS) -> list[tuple[int, RandomCrystal | None, int]]:
    ctx = _WORKER_CONTEXT
    return [(i, *_generate_full(ctx, i, max_streams)) for i in indices]


def _local_chunk(ctx, indices, max_streams: int = MAX_STREAMS):
    return [(i, *_generate_full(ctx, i, max_streams)) for i in indices]


def _run(ctx: _Context, indices: list[int], n_workers: int, bar, max_streams: int = MAX_STREAMS):
    """Yield (index, crystal or None, streams used) for every index (any order)."""
    chunks = [indices[k:k + CHUNK_SIZE] for k in range(0, len(indices), CHUNK_SIZE)]
    if n_workers <= 1:
        for chunk in chunks:
            results = _local_chunk(ctx, chunk, max_streams)
            if bar is not None:
                bar.update(len(chunk))
            yield from results
        return
    executor = concurrent.futures.ProcessPoolExecutor(
        max_workers=n_workers, mp_context=_mp_context(), initializer=_init_worker,
        initargs=(ctx.config(),))
    try:
        todo = iter(chunks)
        pending = set()
        for chunk in todo:
            pending.add(executor.submit(_worker_chunk, chunk, max_streams))
            if len(pending) >= 2 * n_workers:
                break
        while pending:
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                results = future.result()
                if bar is not None:
                    bar.update(len(results))
                yield from results
                nxt = next(todo, None)
                if nxt is not None:
                    pending.add(executor.submit(_worker_chunk, nxt, max_streams))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def generate_random_crystals(n: int, *, seed: int = 0, space_groups="uniform", compositions=None,
                             max_atoms: int = 40, workers: int | None = None, progress: bool = True,
                             start: int = 0, min_distance_factor: float = 0.7, volume_factor: float = 1.0,
                             max_attempts: int = DEFAULT_MAX_ATTEMPTS, cell: str = "primitive",
                             on_failure: str = "raise") -> GeneratedCrystals:
    """Crystals ``start .. start+n-1`` of the sequence with ``seed``, in index order.

    n: how many indices (>= 0).
    seed: the sequence (>= 0); crystal i depends only on (seed, i) and the settings.
    space_groups: weights of the space groups, as for :func:`space_group_weights`
        (``"uniform"``, ``"bundled"``, a dict {number: weight} or 230 weights).
    compositions: dicts {element: count per formula unit}; None uses the
        reduced formulas of the bundled MP-20 subset (:func:`compositions_from`).
    max_atoms: most atoms per cell (per primitive cell with ``cell="primitive"``).
    workers: worker processes; None uses one per available CPU, 1 works in this
        process.  The result does not depend on it.
    progress: show a tqdm progress bar.
    start: index of the first crystal (to extend or resume a sequence).
    min_distance_factor, volume_factor, max_attempts, cell: as for :func:`generate_one`.
    on_failure: what an index that finds no crystal does.

        ``"raise"`` (default): an index whose first ``max_attempts`` attempts
        fail continues with further attempt streams (module docs), so the
        result has exactly n crystals; how many indices needed that is
        reported in one warning, and an index that fails in all
        ``MAX_STREAMS`` streams is a RuntimeError.
        ``"skip"``: each index gets at most ``max_attempts`` attempts (its
        first stream only, as :func:`generate_one`); an index whose attempts
        all fail is left out, listed in the result's ``skipped`` as
        ``(index, space group)`` and summarized in one RuntimeWarning.  The
        time per index is bounded, but groups that are hard to fill are
        under-represented.

    Returns a :class:`GeneratedCrystals` (a list; ``.skipped`` is empty with
    ``"raise"``).  Requested groups that cannot be filled within ``max_atoms``
    get no crystals, with a warning (module docs, "Groups that cannot be
    filled").  ValueError for bad arguments or when no requested group can be
    filled.
    """
    n = _check_int("n", n, 0)
    start = _check_int("start", start, 0)
    if workers is not None:
        workers = _check_int("workers", workers, 1)
    if not isinstance(on_failure, str) or on_failure not in _ON_FAILURE:
        raise ValueError(f"on_failure must be 'raise' (retry over further attempt streams, error if all fail) or "
                         f"'skip' (leave out an index whose max_attempts attempts fail), not {on_failure!r}")
    skip = on_failure == "skip"
    _pyxtal()
    ctx = _make_context(seed=seed, weights=space_groups, compositions=compositions, max_atoms=max_atoms,
                        min_distance_factor=min_distance_factor, volume_factor=volume_factor,
                        max_attempts=max_attempts, cell=cell)
    if n == 0:
        return GeneratedCrystals()
    ctx.prepare().warn_dropped()
    indices = list(range(start, start + n))
    n_chunks = -(-n // CHUNK_SIZE)
    n_workers = min(_available_cpus() if workers is None else workers, n_chunks)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="random crystals", unit=" crystals", dynamic_ncols=True)
        except ImportError:  # the bar is cosmetic
            bar = None
    results: list[RandomCrystal | None] = [None] * n
    extra_streams, failed = [], []
    try:
        for index, crystal, streams in _run(ctx, indices, n_workers, bar, 1 if skip else MAX_STREAMS):
            if crystal is None:
                failed.append(index)
                continue
            results[index - start] = crystal
            if streams > 1:
                extra_streams.append((index, crystal.space_group))
    finally:
        if bar is not None:
            bar.close()
    failed.sort()
    failed_groups = [_pick(_index_rng(ctx.seed, i), ctx.cdf) for i in failed]
    if failed and not skip:
        raise RuntimeError(
            f"{len(failed)} of {n} indices found no crystal in {MAX_STREAMS} x {ctx.max_attempts} attempts "
            f"(indices {failed[:10]}{' ...' if len(failed) > 10 else ''}; space groups {sorted(set(failed_groups))}); "
            "raise max_attempts or max_atoms, or lower min_distance_factor, or pass on_failure='skip' to leave "
            "such indices out")
    out = GeneratedCrystals([c for c in results if c is not None], zip(failed, failed_groups))
    if failed:
        warnings.warn(
            f"{len(failed)} of {n} indices found no crystal in {ctx.max_attempts} "
            f"attempt{'s' if ctx.max_attempts != 1 else ''} and were left out "
            f"(on_failure='skip'; space groups: "
            f"{', '.join(f'{sg} x{c}' for sg, c in out.skipped_by_space_group.items())}); "
            f"{len(out)} crystals returned, their skipped indices in .skipped",
            RuntimeWarning, stacklevel=2)
    if extra_streams:
        extra_streams.sort()
        groups = collections.Counter(sg for _, sg in extra_streams)
        warnings.warn(
            f"{len(extra_streams)} of {n} indices found no crystal in their first {ctx.max_attempts} attempts "
            f"and were completed from later attempt streams (space groups: "
            f"{', '.join(f'{sg} x{c}' for sg, c in sorted(groups.items()))}); the result still has "
            f"{n} crystals, deterministic per index",
            RuntimeWarning, stacklevel=2)
    return out
