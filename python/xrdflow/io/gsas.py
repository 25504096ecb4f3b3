"""GSAS constant-wavelength powder data (.gsa, .gsas, .gss, .fxye, .raw text).

Layout: a title line, optional '#' comment lines and an ``Instrument parameter
file:`` line, then one or more banks, each a header line
``BANK ibank nchan nrec BINTYP BCOEF1 BCOEF2 BCOEF3 BCOEF4 TYPE`` followed by its
records. Supported variants (constant wavelength, angles in centidegrees):

* ``CONST``/``CONS`` + ``STD`` (or no TYPE): 10 fixed-width (I2, F6) fields per
  80-column record, NCTR (blank = 1) and counts; sigma = sqrt(counts / NCTR) as in
  GSAS-II (0 counts: sigma from sqrt(max(I, 1))).
* ``CONST``/``CONS`` + ``ESD``: 5 fixed-width (F8 intensity, F8 esd) pairs per
  record; whitespace-separated pairs are accepted as well.
* ``FXYE`` (any BINTYP): one point per line, ``2theta(centidegrees) intensity esd``,
  whitespace separated.

For CONST data 2-theta = (BCOEF1 + i * BCOEF2) / 100 degrees. Time-of-flight
banks (``TIME_MAP``, ``RALF``, ``SLOG``) and the ``ALT`` record type are refused
with a message. Several banks need ``bank=NUMBER``. GSAS data files do not carry
the wavelength (it lives in the instrument parameter file), so ``radiation`` comes
from a ``wavelength``/``lambda`` number in the title or comments if any, else from
the ``wavelength=`` argument.
"""
from __future__ import annotations

import numpy as np

from .pattern import MAX_POINTS, PatternFormatError, build_pattern
from .text import _header_wavelength

__all__ = ["read_gsas", "looks_like_gsas"]


def looks_like_gsas(text: str) -> bool:
    for line in text.splitlines()[:400]:
        if line.startswith("BANK ") or line.startswith("BANK\t"):
            return True
    return False


def _banks(lines):
    """[(line index of BANK, tokens)]"""
    return [(i, ln.split()) for i, ln in enumerate(lines) if ln.startswith("BANK")]


def _fixed_fields(line: str, width: int):
    body = line.rstrip()
    return [body[i:i + width] for i in range(0, len(body), width)]


def _check_padding(field: str, nchan: int, source, lineno):
    """Fields after the last announced point may only pad the last record (blank or 0)."""
    f = field.strip()
    try:
        zero = not f or float(f) == 0.0
    except ValueError:
        zero = False
    if not zero:
        raise PatternFormatError(f"data beyond the {nchan} points the BANK line announces ({f!r})", source, lineno)


def _parse_float(field: str, what: str, source, lineno):
    try:
        return float(field)
    except ValueError:
        raise PatternFormatError(f"{what} field {field!r} is not a number", source, lineno) from None


def read_gsas(text: str, source: str, wavelength=None, notes=(), bank=None):
    """MeasuredPattern from GSAS text (see the module docstring for the variants)."""
    lines = text.splitlines()
    banks = _banks(lines)
    if not banks:
        raise PatternFormatError("no 'BANK' line: not a GSAS data file", source)
    if bank is None:
        if len(banks) > 1:
            nums = [t[1] if len(t) > 1 else "?" for _, t in banks]
            raise PatternFormatError(f"{len(banks)} banks ({', '.join(nums)}); pass bank=NUMBER", source)
        k = 0
    else:
        nums = [t[1] if len(t) > 1 else "" for _, t in banks]
        if str(bank) not in nums:
            raise PatternFormatError(f"no BANK {bank}; banks in the file: {', '.join(nums)}", source)
        k = nums.index(str(bank))
    hdr_index, tok = banks[k]
    hdr_line = hdr_index + 1
    end_index = banks[k + 1][0] if k + 1 < len(banks) else len(lines)
    if len(tok) < 5:
        raise PatternFormatError(f"BANK line has {len(tok)} fields; expected "
                                 "'BANK ibank nchan nrec BINTYP BCOEF1 BCOEF2 BCOEF3 BCOEF4 [TYPE]'", source, hdr_line)
    try:
        nchan = int(tok[2])
    except ValueError:
        raise PatternFormatError(f"BANK nchan {tok[2]!r} is not an integer", source, hdr_line) from None
    if not 0 < nchan <= MAX_POINTS:
        raise PatternFormatError(f"BANK nchan = {nchan}: must be between 1 and {MAX_POINTS}", source, hdr_line)
    bintyp = tok[4].upper()
    rtype = tok[9].upper() if len(tok) > 9 else ("FXYE" if "FXYE" in [t.upper() for t in tok] else "STD")
    if bintyp in ("TIME_MAP", "RALF", "SLOG") or rtype == "ALT":
        raise PatternFormatError(f"BANK with {bintyp} {rtype}: time-of-flight / ALT data are not supported "
                                 "(constant-wavelength CONST STD/ESD and FXYE only)", source, hdr_line)
    if rtype not in ("STD", "ESD", "FXYE"):
        raise PatternFormatError(f"unknown GSAS record type {rtype!r}; supported: STD, ESD, FXYE", source, hdr_line)
    if rtype != "FXYE" and bintyp not in ("CONST", "CONS"):
        raise PatternFormatError(f"BINTYP {bintyp!r} with {rtype} records is not supported (CONST/CONS only)",
                                 source, hdr_line)
    start_cdeg = step_cdeg = None
    if bintyp in ("CONST", "CONS"):
        if len(tok) < 7:
            raise PatternFormatError("CONST BANK line needs BCOEF1 (start) and BCOEF2 (step) in centidegrees",
                                     source, hdr_line)
        start_cdeg = _parse_float(tok[5], "BCOEF1 (start)", source, hdr_line)
        step_cdeg = _parse_float(tok[6], "BCOEF2 (step)", source, hdr_line)
        if rtype != "FXYE" and not step_cdeg > 0:
            raise PatternFormatError(f"BCOEF2 (step) = {step_cdeg:g} centidegrees must be positive", source, hdr_line)

    x_list, y_list, e_list, line_list = [], [], [], []
    for idx in range(hdr_index + 1, end_index):
        raw = lines[idx]
        lineno = idx + 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if len(y_list) >= nchan:
            raise PatternFormatError(f"data beyond the {nchan} points the BANK line announces", source, lineno)
        if rtype == "FXYE":
            parts = raw.split()
            if len(parts) < 3:
                raise PatternFormatError(f"FXYE line needs '2theta(centideg) intensity esd', got {len(parts)} value(s)",
                                         source, lineno)
            x_list.append(_parse_float(parts[0], "2-theta", source, lineno) / 100.0)
            y_list.append(_parse_float(parts[1], "intensity", source, lineno))
            e_list.append(_parse_float(parts[2], "esd", source, lineno))
            line_list.append(lineno)
        elif rtype == "STD":
            for field in _fixed_fields(raw, 8):
                if len(y_list) >= nchan:
                    _check_padding(field, nchan, source, lineno)
                    continue
                nctr_text, counts_text = field[:2].strip(), field[2:8].strip()
                if not counts_text:
                    raise PatternFormatError(f"empty counts field {field!r} (STD records are 10 fields of 8 "
                                             "columns: I2 counters, F6 counts)", source, lineno)
                nctr = int(_parse_float(nctr_text, "NCTR", source, lineno)) if nctr_text else 1
                counts = _parse_float(counts_text, "counts", source, lineno)
                y_list.append(counts)
                e_list.append(np.sqrt(counts / max(nctr, 1)) if counts > 0 else 0.0)
                line_list.append(lineno)
        else:  # ESD
            fields = _fixed_fields(raw, 8)
            try:
                vals = [float(f) for f in fields]
            except ValueError:
                vals = None
            if vals is None or len(vals) % 2:
                vals = [_parse_float(t, "intensity/esd", source, lineno) for t in raw.split()]
                if len(vals) % 2:
                    raise PatternFormatError("ESD records hold (intensity, esd) pairs; odd number of values",
                                             source, lineno)
            for j in range(0, len(vals), 2):
                if len(y_list) >= nchan:
                    _check_padding(str(vals[j]) if vals[j] else "", nchan, source, lineno)
                    continue
                y_list.append(vals[j])
                e_list.append(vals[j + 1])
                line_list.append(lineno)
    if len(y_list) != nchan:
        raise PatternFormatError(f"BANK line announces {nchan} points but the bank holds {len(y_list)}",
                                 source, hdr_line)
    if rtype == "FXYE":
        x = np.asarray(x_list)
    else:
        x = (start_cdeg + step_cdeg * np.arange(nchan, dtype=np.float64)) / 100.0
    title = lines[0].strip() if lines and not lines[0].startswith("BANK") else ""
    comments = [title] + [ln.lstrip("#").strip() for ln in lines[1:banks[0][0]] if ln.strip()]
    meta = {"notes": list(notes), "title": title, "bank": tok[1], "bintyp": bintyp, "record_type": rtype,
            "comments": comments[1:]}
    for ln in lines[1:banks[0][0]]:
        if ln.lower().startswith("instrument parameter"):
            meta["instrument_parameter_file"] = ln.split(":", 1)[-1].strip()
    wls, wts = _header_wavelength(comments)
    return build_pattern(x, y_list, e_list, source=source, fmt="gsas", file_wavelengths=wls, file_weights=wts,
                         wavelength=wavelength, metadata=meta, lines=np.asarray(line_list))
