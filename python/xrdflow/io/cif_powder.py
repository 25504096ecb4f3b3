"""Powder profiles in CIF (pdCIF), read with gemmi's CIF parser.

2-theta: the loop column ``_pd_meas_2theta_scan`` or ``_pd_proc_2theta_corrected``;
else an evenly spaced scan from ``_pd_meas_2theta_range_min/max/inc`` (or
``_pd_proc_2theta_range_*``), whose point count must match.
Intensity, first found in the same loop: ``_pd_meas_counts_total``,
``_pd_meas_intensity_total``, ``_pd_proc_intensity_total`` (calculated and
background-subtracted profiles are not read). Standard uncertainties written as
``1234(35)`` become ``sigma`` when every point has one. Both ``_pd_meas_2theta_scan``
and DDLm ``_pd_meas.2theta_scan`` spellings are accepted.
Wavelength: ``_diffrn_radiation_wavelength`` (a loop with
``_diffrn_radiation_wavelength_wt`` gives several lines) or ``_pd_proc_wavelength``
in the profile block, else in another block of the file, else
``_diffrn_radiation_type`` naming a tube ('Cu K\\a', 'Mo K\\a~1~').
Structure: when the profile block has atom sites, or exactly one block of the file
has, ``pattern.structure`` is that block's structure (as ``Structure.from_cif(file, block=NAME)``).
A file with several profile blocks needs ``block=NAME``.
"""
from __future__ import annotations

import re
import warnings

import numpy as np

from ..structure import Structure, StructureError, _has_atom_sites, _structure_fields_from_block
from .pattern import MAX_POINTS, PatternFormatError, build_pattern

__all__ = ["read_cif_powder", "parse_su"]

_X_TAGS = ("pd_meas_2theta_scan", "pd_proc_2theta_corrected")
_Y_TAGS = ("pd_meas_counts_total", "pd_meas_intensity_total", "pd_proc_intensity_total")
_RANGES = ("pd_meas_2theta_range_", "pd_proc_2theta_range_")
_SU = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+))(?:[eE]([-+]?\d+))?\((\d+)\)$")
_TUBE_TYPE = re.compile(r"^\s*(Cu|Mo|Co|Fe|Cr|Ag)\s*K\s*\\?(?:a|alpha)(?:\s*~?\s*(1|2)\s*~?)?\s*$", re.I)


def _spellings(tag: str):
    """'_pd_meas_2theta_scan' and the DDLm '_pd_meas.2theta_scan'."""
    for cat in ("pd_meas_", "pd_proc_", "diffrn_radiation_"):
        if tag.startswith(cat):
            return ("_" + tag, "_" + cat[:-1] + "." + tag[len(cat):])
    return ("_" + tag,)


def parse_su(token: str):
    """(value, su) of a CIF number such as '1234(35)' or '1.54056(2)' (su None when absent;
    value NaN for '?', '.' or text)."""
    import gemmi

    t = gemmi.cif.as_string(token).strip() if token[:1] in "'\"" else token.strip()
    if t in ("?", ".", ""):
        return float("nan"), None
    m = _SU.match(t)
    if m:
        mant, exp, su = m.groups()
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        scale = 10.0 ** (int(exp) if exp else 0)
        return float(mant) * scale, int(su) * 10.0 ** (-decimals) * scale
    try:
        return float(t), None
    except ValueError:
        return float("nan"), None


def _tag_line(text: str, block_name: str, tag: str) -> "int | None":
    """1-based line of ``tag`` inside block ``block_name`` (for messages)."""
    lines = text.splitlines()
    start = 0
    for i, ln in enumerate(lines):
        if ln.strip().lower() == f"data_{block_name}".lower():
            start = i
            break
    for i in range(start, len(lines)):
        if lines[i].strip().lower().startswith(tag.lower()):
            return i + 1
    return None


def _find_tag(block, tag):
    for spelling in _spellings(tag):
        col = block.find_values(spelling)
        if len(col):
            return spelling, col
    return None, None


def _profile_columns(block):
    """(x spelling or None, y spelling, y values, x values or None) for the first usable pair."""
    for ytag in _Y_TAGS:
        yname, ycol = _find_tag(block, ytag)
        if yname is None:
            continue
        for xtag in _X_TAGS:
            for xname in _spellings(xtag):
                table = block.find([xname, yname])
                if len(table) == len(ycol) and len(table):
                    return xname, yname, [r[1] for r in table], [r[0] for r in table]
        for xtag in _X_TAGS:  # a 2-theta column in another loop of the same length
            xname, xcol = _find_tag(block, xtag)
            if xname is not None and len(xcol) == len(ycol):
                return xname, yname, list(ycol), list(xcol)
        return None, yname, list(ycol), None
    return None, None, None, None


def _is_profile_block(block) -> bool:
    return any(_find_tag(block, t)[0] for t in _Y_TAGS)


def _wavelengths(block):
    wl_name, wl_col = _find_tag(block, "diffrn_radiation_wavelength")
    if wl_name is None:
        wl_name, wl_col = _find_tag(block, "pd_proc_wavelength")
    if wl_name is not None:
        wls = [parse_su(v)[0] for v in wl_col]
        wls = [w for w in wls if np.isfinite(w)]
        if wls:
            wts = None
            for spelling in ("_diffrn_radiation_wavelength_wt", "_diffrn_radiation_wavelength.wt"):
                table = block.find([wl_name, spelling])
                if len(table) == len(wl_col):
                    wts = [parse_su(r[1])[0] for r in table]
                    if not all(np.isfinite(w) for w in wts):
                        wts = None
                    break
            if wts is not None and len(wts) != len(wls):
                wts = None
            return wls, wts
    name, col = _find_tag(block, "diffrn_radiation_type")
    if name is not None:
        import gemmi

        from ..radiation import parse_radiation

        m = _TUBE_TYPE.match(gemmi.cif.as_string(col[0]))
        if m:
            rad = parse_radiation(m.group(1).capitalize() + "Ka" + (m.group(2) or ""))
            return list(rad.wavelengths), list(rad.weights)
    return None, None


def read_cif_powder(text: str, source: str, wavelength=None, notes=(), block=None):
    """MeasuredPattern (with ``structure`` when the file has one) from pdCIF text."""
    import gemmi

    try:
        doc = gemmi.cif.read_string(text)
    except (ValueError, RuntimeError) as exc:
        msg = str(exc)
        m = re.match(r"^string:(\d+)\S*\s*(.*)$", msg, re.S)
        line = int(m.group(1)) if m else None
        reason = (m.group(2) if m else msg).lstrip(": ")
        raise PatternFormatError(f"not valid CIF: {reason}", source, line) from None
    profiles = [b for b in doc if _is_profile_block(b)]
    if block is not None:
        chosen = doc.find_block(block)
        if chosen is None or not _is_profile_block(chosen):
            names = ", ".join(repr(b.name) for b in profiles) or "none"
            raise PatternFormatError(f"no powder-profile block named {block!r}; profile blocks: {names}", source)
    elif not profiles:
        tags = ", ".join("_" + t for t in _Y_TAGS)
        hint = " (it has atom sites: read it with xrdflow.Structure.from_cif)" if any(
            _has_atom_sites(b) for b in doc) else ""
        raise PatternFormatError(f"no powder profile in this CIF: none of {tags} is present{hint}", source)
    elif len(profiles) > 1:
        names = ", ".join(repr(b.name) for b in profiles)
        raise PatternFormatError(f"{len(profiles)} powder-profile blocks ({names}); pass block=NAME", source)
    else:
        chosen = profiles[0]

    xname, yname, yvals, xvals = _profile_columns(chosen)
    yline = _tag_line(text, chosen.name, yname)
    if len(yvals) > MAX_POINTS:
        raise PatternFormatError(f"{len(yvals)} points, more than the {MAX_POINTS} this reader accepts", source, yline)
    parsed = [parse_su(v) for v in yvals]
    y = np.array([v for v, _ in parsed], dtype=np.float64)
    sus = [s for _, s in parsed]
    meta = {"block": chosen.name, "intensity_tag": yname, "notes": list(notes)}
    if all(s is not None for s in sus):
        sigma = np.array(sus, dtype=np.float64)
    else:
        sigma = None
        if any(s is not None for s in sus):
            meta["notes"].append("only some intensities carry a standard uncertainty; sigma not used")
    if xvals is not None:
        x = np.array([parse_su(v)[0] for v in xvals], dtype=np.float64)
        meta["two_theta_tag"] = xname
    else:
        x = None
        for prefix in _RANGES:
            vals = []
            for part in ("min", "max", "inc"):
                name, col = _find_tag(chosen, prefix + part)
                vals.append(parse_su(col[0])[0] if name is not None else float("nan"))
            if all(np.isfinite(vals)):
                lo, hi, inc = vals
                if inc <= 0 or hi <= lo:
                    raise PatternFormatError(f"_{prefix}min/max/inc = {lo:g}/{hi:g}/{inc:g}: need max > min, inc > 0",
                                             source, _tag_line(text, chosen.name, "_" + prefix + "inc"))
                n = int(round((hi - lo) / inc)) + 1
                if n != len(y):
                    raise PatternFormatError(
                        f"_{prefix}min/max/inc = {lo:g}/{hi:g}/{inc:g} imply {n} points but {yname} has {len(y)} "
                        "values", source, yline)
                x = lo + inc * np.arange(n, dtype=np.float64)
                meta["two_theta_tag"] = f"_{prefix}min/max/inc"
                break
        if x is None:
            raise PatternFormatError(
                f"{yname} has no 2-theta: no _pd_meas_2theta_scan / _pd_proc_2theta_corrected column in its loop and "
                "no _pd_meas_2theta_range_min/max/inc", source, yline)

    wls, wts = _wavelengths(chosen)
    if wls is None:
        found = [w for w in (_wavelengths(b) for b in doc if b is not chosen) if w[0] is not None]
        if len({tuple(w[0]) for w in found}) == 1:
            wls, wts = found[0]

    structure = None
    atom_blocks = [b for b in doc if _has_atom_sites(b)]
    struct_block = chosen if _has_atom_sites(chosen) else (atom_blocks[0] if len(atom_blocks) == 1 else None)
    if struct_block is None and atom_blocks:
        meta["phase_blocks"] = [b.name for b in atom_blocks]
        meta["notes"].append(f"{len(atom_blocks)} structure blocks; read the one you need with "
                             "xrdflow.Structure.from_cif(path, block=NAME)")
    if struct_block is not None:
        try:  # from the block already parsed, not by reading and parsing the file again
            structure = Structure(**_structure_fields_from_block(struct_block, source))
            meta["structure_block"] = struct_block.name
        except StructureError as exc:
            warnings.warn(f"{source}: the profile was read but the structure in block {struct_block.name!r} "
                          f"could not be: {exc}", UserWarning, stacklevel=3)
            meta["notes"].append(f"structure in block {struct_block.name!r} not read: {exc}")

    try:
        return build_pattern(x, y, sigma, source=source, fmt="cif", file_wavelengths=wls, file_weights=wts,
                             wavelength=wavelength, metadata=meta, structure=structure)
    except PatternFormatError as exc:
        if exc.line is not None:
            raise
        raise PatternFormatError(f"{exc.reason} (in the loop of {yname} of block {chosen.name!r})",
                                 source, yline) from None
