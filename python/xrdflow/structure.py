"""Crystal structures ready for diffraction.

:class:`Structure` holds the full content of one unit cell (the P1 expansion
of the asymmetric unit): lattice, fractional coordinates, atomic numbers,
formal charges, occupancies and isotropic Debye-Waller factors. Every
constructor (:meth:`Structure.from_arrays`, :meth:`Structure.from_cif`,
:meth:`Structure.from_pymatgen`, :meth:`Structure.from_ase`, and the low-level
``Structure(...)`` itself) goes through one validation routine, so a
Structure that exists is always physically sensible, and anything else is
reported as a :class:`StructureError` that says what is wrong and how to
fix it.

Conventions
-----------
* Lengths in angstrom, angles in degrees.
* ``lattice`` rows are the vectors a, b, c in Cartesian coordinates. When a
  cell is given by its six parameters it is oriented in the usual
  crystallographic way (the one gemmi and the PDB use): a along x, b in the
  xy plane, c completing a right-handed set.
* Thermal motion is the isotropic Debye-Waller B in angstrom^2; U is accepted
  and converted with B = 8 pi^2 U (Trueblood et al. 1996, Acta Cryst. A52, 770).
  B = 0 means no thermal damping.
* A Structure is immutable: its arrays are read-only and its attributes cannot
  be rebound; derive new structures with :meth:`Structure.with_b_iso` or the
  constructors.
"""

from __future__ import annotations

import math
import numbers as _numbers
import os
import re
import warnings
from collections.abc import Mapping

import gemmi
import numpy as np

__all__ = ["Structure", "StructureError"]


class StructureError(ValueError):
    """An invalid crystal structure; the message says what is wrong and how to fix it."""


# Limits used by validation (angstrom unless stated).
_MIN_VECTOR_LENGTH = 1e-3
_MAX_VECTOR_LENGTH = 1e4
_MIN_RELATIVE_VOLUME = 1e-6  # V / (a b c); 1 for orthogonal axes, 0 for coplanar ones
_OCCUPANCY_SLACK = 1e-6  # occupancies up to 1 + slack are accepted and clipped to 1
_MAX_ABS_CHARGE = 8
_MAX_Z = 118
# A non-integer oxidation state (e.g. 2.667 for Fe in Fe3O4) has no ionic form
# factor; it is rounded when within this distance of an integer, else set to 0.
_OXIDATION_STATE_TOL = 1e-3
_B_PER_U = 8.0 * math.pi**2  # B = 8 pi^2 U (Trueblood et al. 1996, Acta Cryst. A52, 770)

# 'Fe', 'Fe3+', 'Fe+3', 'O2-', 'O-2', 'Cl-', 'Na+' (case-insensitive element part).
_SYMBOL_RE = re.compile(r"^([A-Za-z]{1,2})(?:(\d?)([+-])|([+-])(\d?))?$")


# ----------------------------------------------------------------------------
# small parsing helpers
# ----------------------------------------------------------------------------


def _float_array(name, value):
    """``value`` as a new float64 ndarray; TypeError for non-numeric Python types."""
    if isinstance(value, (str, bytes, Mapping, set)):
        raise TypeError(f"{name} must be an array of numbers, not {type(value).__name__}")
    try:
        arr = np.asarray(value)
        converted = None if arr.dtype.kind == "c" else np.array(arr, dtype=np.float64)
    except TypeError as exc:
        raise TypeError(f"{name} must be an array of numbers ({exc})") from None
    except (ValueError, OverflowError) as exc:
        raise StructureError(
            f"{name} could not be read as a rectangular array of real numbers ({exc}); "
            "pass a numpy array or nested lists of equal length"
        ) from None
    if converted is None:
        raise StructureError(f"{name} contains complex numbers; give real numbers")
    return converted


def _round_charge(value):
    """Integer oxidation state from a possibly fractional one (0 if not near an integer)."""
    nearest = round(value)
    return int(nearest) if abs(value - nearest) <= _OXIDATION_STATE_TOL else 0


def _parse_symbol(text):
    """(Z, charge) from 'Fe', 'FE', 'Fe3+', 'Fe+3', 'O2-', 'Cl-'; None if not recognised."""
    match = _SYMBOL_RE.match(text.strip())
    if match is None:
        return None
    element, digits_a, sign_a, sign_b, digits_b = match.groups()
    z = gemmi.Element(element).atomic_number
    if z == 0:
        return None
    sign = sign_a or sign_b
    if sign is None:
        return z, 0
    magnitude = int(digits_a or digits_b or 1)
    return z, magnitude if sign == "+" else -magnitude


def _parse_species(species):
    """Atomic numbers and charges from symbols, ion symbols or atomic numbers."""
    if isinstance(species, (str, bytes)):
        raise TypeError(
            f"species must be a sequence with one entry per atom, not a single string "
            f"({species!r}); write [{species!r}] for one atom"
        )
    if isinstance(species, Mapping) or not hasattr(species, "__len__"):
        raise TypeError(f"species must be a sequence of symbols or atomic numbers, "
                        f"not {type(species).__name__}")
    z = np.empty(len(species), dtype=np.int64)
    charges = np.zeros(len(species), dtype=np.int64)
    for i, item in enumerate(species):
        if isinstance(item, str):
            parsed = _parse_symbol(item)
            if parsed is None:
                raise StructureError(
                    f"unknown element {item!r} at atom {i}: use an element symbol ('Fe'), "
                    "an ion ('Fe3+', 'O2-', 'Fe+3') or an atomic number (1-118)"
                )
            z[i], charges[i] = parsed
        elif isinstance(item, _numbers.Integral) and not isinstance(item, (bool, np.bool_)):
            if not 1 <= item <= _MAX_Z:
                raise StructureError(
                    f"unknown element: atomic number {item} at atom {i}; atomic numbers "
                    f"must be 1-{_MAX_Z} (dummy atoms such as Z=0 are not allowed)"
                )
            z[i] = item
        else:
            raise TypeError(
                f"species[{i}] is {type(item).__name__} ({item!r}); expected an element "
                "symbol such as 'Fe' or 'Fe3+', or an integer atomic number"
            )
    return z, charges


def _per_atom(name, value, n_atoms):
    """A scalar or (N,) float array broadcast to (N,)."""
    arr = _float_array(name, value)
    if arr.ndim == 0:
        return np.full(n_atoms, float(arr))
    if arr.shape != (n_atoms,):
        raise StructureError(
            f"{name} has shape {arr.shape} but there are {n_atoms} atoms (frac has "
            f"{n_atoms} rows); give one value per atom or a single scalar"
        )
    return arr


def _lattice_from_parameters(params):
    """(3, 3) row matrix from (a, b, c, alpha, beta, gamma): a along x, b in the xy plane."""
    a, b, c, alpha, beta, gamma = (float(p) for p in params)
    for name, length in (("a", a), ("b", b), ("c", c)):
        if not _MIN_VECTOR_LENGTH <= length <= _MAX_VECTOR_LENGTH:
            raise StructureError(
                f"cell length {name} = {length} angstrom is outside "
                f"[{_MIN_VECTOR_LENGTH}, {_MAX_VECTOR_LENGTH}]; check the units (angstrom)"
            )
    for name, angle in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not 0.0 < angle < 180.0:
            raise StructureError(
                f"cell angle {name} = {angle} is outside (0, 180) degrees; "
                "angles are in degrees"
            )
    ca, cb, cg = (math.cos(math.radians(x)) for x in (alpha, beta, gamma))
    sg = math.sin(math.radians(gamma))
    radicand = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    if radicand <= _MIN_RELATIVE_VOLUME**2:
        raise StructureError(
            f"cell angles alpha={alpha}, beta={beta}, gamma={gamma} do not form a "
            "3D cell (degenerate volume; each angle must be smaller than the sum of "
            "the other two and the three must sum to less than 360 degrees)"
        )
    return np.array(
        [
            [a, 0.0, 0.0],
            [b * cg, b * sg, 0.0],
            [c * cb, c * (ca - cb * cg) / sg, c * math.sqrt(radicand) / sg],
        ]
    )


def _lattice_matrix(lattice):
    """Validated (3, 3) row matrix from a matrix or six cell parameters."""
    lat = _float_array("lattice", lattice)
    if lat.shape not in ((3, 3), (6,)):
        raise StructureError(
            f"lattice has shape {lat.shape}; give a (3, 3) matrix whose rows are the "
            "vectors a, b, c in angstrom, or 6 cell parameters (a, b, c, alpha, beta, gamma)"
        )
    if not np.all(np.isfinite(lat)):
        raise StructureError("lattice contains NaN or infinite values; all entries must be finite")
    if lat.shape == (6,):
        return _lattice_from_parameters(lat)
    if np.max(np.abs(lat)) > _MAX_VECTOR_LENGTH:
        raise StructureError(
            f"lattice has an entry of magnitude {np.max(np.abs(lat)):.3g} angstrom; vectors "
            f"longer than {_MAX_VECTOR_LENGTH:g} angstrom are rejected (check the units)"
        )
    lengths = np.linalg.norm(lat, axis=1)
    if np.any(lengths > _MAX_VECTOR_LENGTH):
        raise StructureError(
            f"lattice vector lengths {lengths} angstrom: vectors longer than "
            f"{_MAX_VECTOR_LENGTH:g} angstrom are rejected (check the units)"
        )
    if np.any(lengths < _MIN_VECTOR_LENGTH):
        raise StructureError(
            f"lattice vector lengths {lengths} angstrom: a vector shorter than "
            f"{_MIN_VECTOR_LENGTH} angstrom gives a degenerate cell; rows must be a, b, c"
        )
    det = float(np.linalg.det(lat))
    if abs(det) < _MIN_RELATIVE_VOLUME * float(np.prod(lengths)):
        raise StructureError(
            f"lattice is degenerate: volume {det:.3g} angstrom^3 for vector lengths "
            f"{lengths}; the three vectors are (nearly) coplanar"
        )
    if det < 0:
        raise StructureError(
            "lattice is left-handed (negative volume, det < 0); swap two lattice vectors "
            "and the matching columns of the fractional coordinates"
        )
    return lat


def _validate(lattice, frac, numbers, charges, occupancy, b_iso, label):
    """Check and normalise every field; returns read-only arrays with exact dtypes."""
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, not {type(label).__name__}")
    lat = _lattice_matrix(lattice)

    xyz = _float_array("frac", frac)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise StructureError(
            f"frac has shape {xyz.shape}; fractional coordinates must be an (N, 3) array "
            "(use a 2D array even for a single atom: [[x, y, z]])"
        )
    n_atoms = xyz.shape[0]
    if n_atoms == 0:
        raise StructureError("the structure has no atoms; give at least one atom")
    if not np.all(np.isfinite(xyz)):
        raise StructureError("frac contains NaN or infinite values; coordinates must be finite")
    xyz = np.mod(xyz, 1.0)
    xyz[xyz >= 1.0] = 0.0  # np.mod(-1e-17, 1.0) rounds to 1.0

    z = _float_array("numbers", numbers)
    if z.shape != (n_atoms,):
        raise StructureError(
            f"got {z.size if z.ndim else 1} species for {n_atoms} atoms (frac has "
            f"{n_atoms} rows); give one species per atom"
        )
    bad = np.flatnonzero(~np.isfinite(z) | (z != np.round(z)) | (z < 1) | (z > _MAX_Z))
    if bad.size:
        raise StructureError(
            f"unknown element: atomic number {z[bad[0]]:g} at atom {bad[0]}; atomic numbers "
            f"must be integers 1-{_MAX_Z} (dummy atoms such as Z=0 are not allowed)"
        )

    q = np.zeros(n_atoms) if charges is None else _per_atom("charges", charges, n_atoms)
    bad = np.flatnonzero(~np.isfinite(q) | (q != np.round(q)) | (np.abs(q) > _MAX_ABS_CHARGE))
    if bad.size:
        raise StructureError(
            f"charge {q[bad[0]]:g} at atom {bad[0]} is not an integer oxidation state in "
            f"[-{_MAX_ABS_CHARGE}, {_MAX_ABS_CHARGE}]; use 0 for neutral or unknown"
        )

    occ = np.ones(n_atoms) if occupancy is None else _per_atom("occupancy", occupancy, n_atoms)
    if not np.all(np.isfinite(occ)):
        raise StructureError(
            "occupancy contains NaN or infinite values; occupancies must be in (0, 1]"
        )
    zero = np.flatnonzero(occ == 0)
    if zero.size:
        raise StructureError(
            f"atom {zero[0]} has zero occupancy; it does not scatter, so drop it from the "
            "input (occupancies must be in (0, 1])"
        )
    bad = np.flatnonzero((occ < 0) | (occ > 1.0 + _OCCUPANCY_SLACK))
    if bad.size:
        raise StructureError(
            f"occupancy {occ[bad[0]]:g} at atom {bad[0]} is outside (0, 1]; an occupancy is "
            "the fraction of unit cells in which the atom is present"
        )
    occ = np.minimum(occ, 1.0)

    b = np.zeros(n_atoms) if b_iso is None else _per_atom("b_iso", b_iso, n_atoms)
    if not np.all(np.isfinite(b)):
        raise StructureError("b_iso contains NaN or infinite values; B must be finite and >= 0")
    bad = np.flatnonzero(b < 0)
    if bad.size:
        raise StructureError(
            f"negative Debye-Waller B = {b[bad[0]]:g} angstrom^2 at atom {bad[0]}; B must "
            "be >= 0 (use 0 for no thermal damping)"
        )

    fields = {
        "lattice": lat,
        "frac": xyz,
        "numbers": z.astype(np.int32),
        "charges": q.astype(np.int32),
        "occupancy": occ,
        "b_iso": b,
    }
    for key, arr in fields.items():
        arr = np.ascontiguousarray(arr, dtype=np.float64 if arr.dtype.kind == "f" else np.int32)
        arr.setflags(write=False)
        fields[key] = arr
    fields["label"] = label
    return fields


# ----------------------------------------------------------------------------
# CIF helpers
# ----------------------------------------------------------------------------


def _read_cif_document(path_or_text):
    """gemmi Document and a display name, from a path or CIF text."""
    if isinstance(path_or_text, os.PathLike):
        path_or_text = os.fspath(path_or_text)
    if not isinstance(path_or_text, str):
        raise TypeError(
            f"from_cif expects a path (str or os.PathLike) or CIF text, "
            f"not {type(path_or_text).__name__}"
        )
    is_text = "\n" in path_or_text or (
        not os.path.exists(path_or_text) and path_or_text.lstrip().lower().startswith("data_")
    )
    if is_text:
        name = "<CIF text>"
        reader = gemmi.cif.read_string
    else:
        name = path_or_text
        if not os.path.isfile(name):
            raise StructureError(
                f"CIF file not found: {name!r}; pass an existing path or the CIF text itself"
            )
        reader = gemmi.cif.read
    try:
        doc = reader(path_or_text)
    except (ValueError, RuntimeError, OSError) as exc:
        raise StructureError(f"could not parse {name} as CIF: {exc}") from None
    return doc, name


def _has_atom_sites(block):
    return bool(block.find_values("_atom_site_fract_x")) or bool(
        block.find_values("_atom_site.fract_x")
    )


def _oxidation_numbers(block):
    """{type symbol: charge} from the _atom_type_symbol/_atom_type_oxidation_number loop."""
    for prefix in ("_atom_type_", "_atom_type."):
        table = block.find(prefix, ["symbol", "oxidation_number"])
        if len(table):
            break
    result = {}
    for row in table:
        symbol, value = gemmi.cif.as_string(row[0]), row[1]
        if gemmi.cif.is_null(value):
            continue
        number = gemmi.cif.as_number(value)
        if math.isfinite(number):
            result[symbol] = _round_charge(number)
    return result


def _structure_fields_from_block(block, source):
    """Arguments for Structure(...) from one CIF block, P1-expanded."""
    where = f"block {block.name!r} of {source}"
    if not _has_atom_sites(block):
        raise StructureError(
            f"{where} has no atom sites (_atom_site_fract_x loop); a structure needs "
            "fractional coordinates"
        )
    if not all(block.find_value(tag) or block.find_value(tag.replace("_cell_", "_cell."))
               for tag in ("_cell_length_a", "_cell_length_b", "_cell_length_c")):
        raise StructureError(
            f"{where} has no unit cell; add _cell_length_a/b/c and _cell_angle_alpha/beta/gamma"
        )
    try:
        small = gemmi.make_small_structure_from_block(block)
    except (ValueError, RuntimeError) as exc:
        raise StructureError(f"could not read the structure in {where}: {exc}") from None
    if not small.symops and small.spacegroup is None and (
        small.spacegroup_hm or small.spacegroup_hall or small.spacegroup_number
    ):
        given = small.spacegroup_hm or small.spacegroup_hall or small.spacegroup_number
        raise StructureError(
            f"{where}: space group {given!r} is not recognised and no symmetry operators "
            "are listed; add a _space_group_symop_operation_xyz loop"
        )
    cell = small.cell
    oxidation = _oxidation_numbers(block)
    # get_all_unit_cell_sites applies every symmetry image and drops images closer
    # than 0.4 angstrom to an earlier image of the same site (gemmi's special-position
    # tolerance), so atoms on special positions appear once even when their
    # coordinates are rounded; split sites closer than that to their own image merge.
    sites = small.get_all_unit_cell_sites()
    n = len(sites)
    frac = np.empty((n, 3))
    z = np.empty(n, dtype=np.int64)
    charges = np.zeros(n, dtype=np.int64)
    occupancy = np.empty(n)
    u_iso = np.empty(n)
    for i, site in enumerate(sites):
        z[i] = site.element.atomic_number
        if z[i] == 0:
            raise StructureError(
                f"unknown element in {where}: site {site.label!r} has type symbol "
                f"{site.type_symbol!r}; give _atom_site_type_symbol as an element or ion "
                "symbol (dummy atoms are not supported)"
            )
        if site.type_symbol in oxidation:
            charges[i] = oxidation[site.type_symbol]
        else:
            parsed = _parse_symbol(site.type_symbol)
            charges[i] = parsed[1] if parsed is not None else 0
        frac[i] = site.fract.tolist()
        occupancy[i] = site.occ
        u_iso[i] = site.u_iso
        if site.u_iso == 0.0 and site.aniso.nonzero():
            # Anisotropic-only site: U_eq = trace(U_cart) / 3 (Fischer & Tillmanns 1988,
            # Acta Cryst. C44, 775), computed by gemmi from the U^ij of the CIF.
            u_iso[i] = cell.calculate_u_eq(site.aniso)
    # Published CIFs use zero-occupancy sites as vacancy placeholders; they do not
    # scatter, so drop them (with a warning) rather than refuse the file.
    empty = occupancy == 0.0
    if empty.all():
        raise StructureError(f"{where}: every site has zero occupancy; nothing scatters")
    if empty.any():
        warnings.warn(f"{where}: dropped {int(empty.sum())} atoms with zero occupancy", RuntimeWarning,
                      stacklevel=3)
        keep = ~empty
        frac, z, charges, occupancy, u_iso = frac[keep], z[keep], charges[keep], occupancy[keep], u_iso[keep]
    return {
        "lattice": [cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma],
        "frac": frac,
        "numbers": z,
        "charges": charges,
        "occupancy": occupancy,
        "b_iso": _B_PER_U * u_iso,
        "label": block.name,
    }


# ----------------------------------------------------------------------------
# Structure
# ----------------------------------------------------------------------------


class Structure:
    """A crystal structure: the full unit-cell content (P1 expanded), ready for diffraction.

    Attributes (all arrays read-only, C-contiguous):

    lattice : (3, 3) float64
        Rows are the lattice vectors a, b, c in Cartesian angstrom.
    frac : (N, 3) float64
        Fractional coordinates wrapped into [0, 1).
    numbers : (N,) int32
        Atomic numbers Z, 1-118.
    charges : (N,) int32
        Formal oxidation states, 0 when neutral or unknown.
    occupancy : (N,) float64
        Site occupancy of each atom, in (0, 1]. A mixed site is several atoms at
        the same position, each with its own occupancy.
    b_iso : (N,) float64
        Isotropic Debye-Waller B in angstrom^2 (B = 8 pi^2 U_iso), >= 0;
        0 means no thermal damping.
    label : str
        A name such as the CIF block name or a material id; "" if none.

    ``Structure(lattice, frac, numbers, ...)`` is the low-level constructor
    taking atomic numbers; :meth:`from_arrays` also takes element and ion
    symbols, U instead of B and six cell parameters.
    """

    __slots__ = ("lattice", "frac", "numbers", "charges", "occupancy", "b_iso", "label")

    def __init__(self, lattice, frac, numbers, charges=None, occupancy=None, b_iso=None,
                 label=""):
        """Validated structure from atomic numbers.

        lattice: (3, 3) rows a, b, c in angstrom, or (a, b, c, alpha, beta, gamma)
        in angstrom/degrees; frac: (N, 3); numbers: (N,) integers 1-118;
        charges: (N,) integer oxidation states (default 0); occupancy: scalar or
        (N,) in (0, 1] (default 1); b_iso: scalar or (N,) B in angstrom^2
        (default 0, no thermal damping). Raises StructureError for invalid values.
        """
        fields = _validate(lattice, frac, numbers, charges, occupancy, b_iso, label)
        for key, value in fields.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, name, value):
        raise AttributeError(
            f"Structure is immutable (cannot set {name!r}); build a new one with "
            "with_b_iso() or Structure.from_arrays()"
        )

    def __delattr__(self, name):
        raise AttributeError(f"Structure is immutable (cannot delete {name!r})")

    def __reduce__(self):
        return (type(self), (self.lattice, self.frac, self.numbers, self.charges,
                             self.occupancy, self.b_iso, self.label))

    @classmethod
    def _from_validated(cls, lattice, frac, numbers, charges, occupancy, b_iso, label) -> "Structure":
        """Rebuild a structure from fields that a Structure already validated
        (e.g. shipped back from a worker process) without validating again.
        The arrays must have the exact dtypes and shapes; they are made read-only.
        Not for user input: use the public constructors."""
        obj = object.__new__(cls)
        for name, value in zip(cls.__slots__, (lattice, frac, numbers, charges, occupancy, b_iso, label)):
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            object.__setattr__(obj, name, value)
        return obj

    # -- constructors --------------------------------------------------------

    @classmethod
    def from_arrays(cls, lattice, frac, species, occupancy=None, b_iso=None, *, u_iso=None,
                    charges=None, label="") -> "Structure":
        """Structure from arrays.

        lattice: (3, 3) with rows a, b, c in Cartesian angstrom, or six cell
            parameters (a, b, c, alpha, beta, gamma) in angstrom and degrees,
            oriented with a along x and b in the xy plane.
        frac: (N, 3) fractional coordinates (wrapped into [0, 1)).
        species: N element symbols ('Fe', case-insensitive), ion symbols
            ('Fe3+', 'Fe+3', 'O2-', 'Cl-') or atomic numbers.
        occupancy: scalar or (N,) in (0, 1]; default 1.
        b_iso: scalar or (N,) Debye-Waller B in angstrom^2; default 0 (no damping).
        u_iso: scalar or (N,) U in angstrom^2, converted with B = 8 pi^2 U;
            give b_iso or u_iso, not both.
        charges: (N,) integer oxidation states overriding those in the symbols.
        label: a name for the structure.
        """
        if b_iso is not None and u_iso is not None:
            raise StructureError("give either b_iso or u_iso, not both (B = 8 pi^2 U)")
        z, parsed_charges = _parse_species(species)
        if u_iso is not None:
            with np.errstate(over="ignore"):  # an overflow to inf is reported by _validate
                b_iso = _B_PER_U * _float_array("u_iso", u_iso)
        return cls(lattice, frac, z, parsed_charges if charges is None else charges,
                   occupancy, b_iso, label)

    @classmethod
    def from_cif(cls, path_or_text, block=None, *, label=None) -> "Structure":
        """Structure from a CIF file (path, also .gz) or CIF text.

        The symmetry operators of the block (or, if none are listed, those of its
        space group; P1 if it names none) fill the unit cell. Images of a site
        closer than 0.4 angstrom to each other are one atom (special positions).
        Partial occupancies are kept per atom. Oxidation states come from the
        _atom_type_oxidation_number loop, else from ion type symbols such as
        'Fe3+', else 0. B comes from _atom_site_B_iso_or_equiv or
        _atom_site_U_iso_or_equiv (converted with B = 8 pi^2 U); a site with only
        anisotropic U^ij gets U_eq = trace(U_cart)/3; a site with neither gets 0.
        Zero-occupancy sites (vacancy placeholders) are dropped with a warning;
        a negative B is a StructureError.

        block: the block name or an index into the blocks that have atom sites
            (the order of all_from_cif); required when several blocks have atoms.
        label: name of the structure; default the block name.
        """
        doc, source = _read_cif_document(path_or_text)
        candidates = [b for b in doc if _has_atom_sites(b)]
        if block is None:
            if len(candidates) > 1:
                names = ", ".join(repr(b.name) for b in candidates)
                raise StructureError(
                    f"{source} has {len(candidates)} data blocks with atom sites ({names}); "
                    "pass block=NAME or block=INDEX, or use Structure.all_from_cif"
                )
            if not candidates:
                names = ", ".join(repr(b.name) for b in doc) or "none"
                raise StructureError(
                    f"{source} has no atom sites (no _atom_site_fract_x loop in blocks: "
                    f"{names}); a structure needs fractional coordinates"
                )
            chosen = candidates[0]
        elif isinstance(block, str):
            chosen = doc.find_block(block)
            if chosen is None:
                names = ", ".join(repr(b.name) for b in doc)
                raise StructureError(
                    f"{source} has no data block named {block!r}; blocks: {names}"
                )
        elif isinstance(block, _numbers.Integral) and not isinstance(block, bool):
            if not -len(candidates) <= block < len(candidates):
                raise StructureError(
                    f"block index {block} is out of range: {source} has {len(candidates)} "
                    "blocks with atom sites"
                )
            chosen = candidates[block]
        else:
            raise TypeError(f"block must be a name (str) or an index (int), "
                            f"not {type(block).__name__}")
        fields = _structure_fields_from_block(chosen, source)
        if label is not None:
            fields["label"] = label
        return cls(**fields)

    @classmethod
    def all_from_cif(cls, path_or_text) -> list["Structure"]:
        """One Structure per data block that has atom sites, in file order."""
        doc, source = _read_cif_document(path_or_text)
        structures = [cls(**_structure_fields_from_block(b, source))
                      for b in doc if _has_atom_sites(b)]
        if not structures:
            raise StructureError(
                f"{source} has no data block with atom sites (_atom_site_fract_x loop)"
            )
        return structures

    @classmethod
    def from_pymatgen(cls, structure, *, label="") -> "Structure":
        """Structure from a pymatgen ``Structure``.

        A disordered site gives one atom per species with that species'
        occupancy. Oxidation states come from ``Species.oxi_state``, rounded to an
        integer when within 1e-3 of one; fractional (mixed-valence) or missing
        states give 0. B comes from the site property 'b_iso' (angstrom^2), else 0.
        A left-handed lattice is replaced by its negative (with negated fractional
        coordinates), which keeps every Cartesian position.
        """
        if not (hasattr(structure, "lattice") and hasattr(structure, "sites")):
            raise TypeError(
                f"from_pymatgen expects a pymatgen.core.Structure, not {type(structure).__name__}"
            )
        frac, z, charges, occupancy, b_iso = [], [], [], [], []
        for i, site in enumerate(structure.sites):
            b = site.properties.get("b_iso")
            for species, occ in site.species.items():
                atomic_number = getattr(species, "Z", 0)
                if not (isinstance(atomic_number, _numbers.Integral)
                        and 1 <= atomic_number <= _MAX_Z):
                    raise StructureError(
                        f"unknown element {str(species)!r} at site {i}: dummy species "
                        "cannot be simulated; replace or remove it"
                    )
                oxi = getattr(species, "oxi_state", None)
                frac.append(site.frac_coords)
                z.append(atomic_number)
                charges.append(0 if oxi is None else _round_charge(oxi))
                occupancy.append(occ)
                b_iso.append(0.0 if b is None else b)
        if not z:
            raise StructureError("the pymatgen structure has no sites")
        lattice, frac = np.asarray(structure.lattice.matrix, dtype=np.float64), np.array(frac)
        if np.linalg.det(lattice) < 0:
            lattice, frac = -lattice, -frac  # same Cartesian positions, right-handed basis
        return cls(lattice, frac, z, charges, occupancy, b_iso, label)

    @classmethod
    def from_ase(cls, atoms, *, label="") -> "Structure":
        """Structure from an ``ase.Atoms`` with a 3D cell.

        The cell is treated as periodic in all three directions (a warning is
        issued when ``atoms.pbc`` is not all True); a left-handed cell is replaced
        by its negative, which keeps every Cartesian position. Occupancies come from
        ``atoms.info['occupancy']`` as written by ASE's CIF reader
        ({kind: {symbol: occupancy}}, with the kind of each atom in the array
        'spacegroup_kinds' or the tags): a mixed site becomes one atom per symbol.
        Otherwise every occupancy is 1. ASE has no oxidation states, so charges
        are 0 and B is 0.
        """
        if not (hasattr(atoms, "cell") and hasattr(atoms, "get_positions")):
            raise TypeError(f"from_ase expects an ase.Atoms, not {type(atoms).__name__}")
        lattice = np.asarray(atoms.cell, dtype=np.float64)
        if np.linalg.det(lattice) < 0:
            lattice = -lattice  # right-handed basis; Cartesian positions are unchanged
        lattice = _lattice_matrix(lattice)
        if not all(atoms.pbc):
            warnings.warn(
                f"atoms.pbc is {list(atoms.pbc)}; the cell is treated as periodic along "
                "all three vectors for diffraction",
                stacklevel=2,
            )
        if len(atoms) == 0:
            raise StructureError("the ase.Atoms object has no atoms")
        frac = np.linalg.solve(lattice.T, atoms.get_positions().T).T
        symbols = atoms.get_chemical_symbols()
        occupancies = atoms.info.get("occupancy")
        if not occupancies:
            return cls.from_arrays(lattice, frac, symbols, label=label)
        kinds = atoms.arrays.get("spacegroup_kinds", atoms.get_tags())
        xyz, species, occ = [], [], []
        for i, symbol in enumerate(symbols):
            for sym, value in occupancies.get(str(kinds[i]), {symbol: 1.0}).items():
                xyz.append(frac[i])
                species.append(sym)
                occ.append(value)
        return cls.from_arrays(lattice, xyz, species, occ, label=label)

    # -- derived quantities --------------------------------------------------

    @property
    def n_atoms(self) -> int:
        """Number of atoms in the unit cell (mixed sites count once per species)."""
        return int(self.numbers.shape[0])

    def __len__(self) -> int:
        return self.n_atoms

    @property
    def volume(self) -> float:
        """Unit-cell volume in angstrom^3."""
        return float(np.linalg.det(self.lattice))

    @property
    def cell_parameters(self) -> tuple[float, float, float, float, float, float]:
        """(a, b, c, alpha, beta, gamma) in angstrom and degrees."""
        a, b, c = np.linalg.norm(self.lattice, axis=1)

        def angle(u, v, nu, nv):
            return math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v) / (nu * nv)))))

        va, vb, vc = self.lattice
        return (float(a), float(b), float(c),
                angle(vb, vc, b, c), angle(va, vc, a, c), angle(va, vb, a, b))

    @property
    def species(self) -> list[str]:
        """Element or ion symbol per atom: 'Fe3+', 'O2-', 'Na+', 'Cl-', 'Na'."""
        out = []
        for z, q in zip(self.numbers.tolist(), self.charges.tolist()):
            name = gemmi.Element(z).name
            if q:
                name += f"{abs(q) if abs(q) > 1 else ''}{'+' if q > 0 else '-'}"
            out.append(name)
        return out

    @property
    def formula(self) -> str:
        """Unit-cell composition weighted by occupancy, Hill order ('Ga4Te4', 'ClNa')."""
        counts = {}
        for z, occ in zip(self.numbers.tolist(), self.occupancy.tolist()):
            name = gemmi.Element(z).name
            counts[name] = counts.get(name, 0.0) + occ
        order = sorted(counts)
        if "C" in counts:
            order = ["C"] + (["H"] if "H" in counts else []) + [
                e for e in order if e not in ("C", "H")]
        parts = []
        for element in order:
            text = f"{counts[element]:.6g}"
            parts.append(element + ("" if text == "1" else text))
        return "".join(parts)

    def with_b_iso(self, b_iso) -> "Structure":
        """Copy with every B set to ``b_iso`` (scalar or (N,), angstrom^2)."""
        return type(self)(self.lattice, self.frac, self.numbers, self.charges,
                          self.occupancy, b_iso, self.label)

    def __repr__(self) -> str:
        a, b, c, alpha, beta, gamma = self.cell_parameters
        return (
            f"Structure({self.label!r}, {self.formula}, n_atoms={self.n_atoms}, "
            f"cell=({a:.4f}, {b:.4f}, {c:.4f}, {alpha:.2f}, {beta:.2f}, {gamma:.2f}), "
            f"volume={self.volume:.3f})"
        )
