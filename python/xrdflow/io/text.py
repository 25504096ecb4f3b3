"""Column text patterns (.xy, .xye, .csv, .txt, .dat) and the "start step end" format.

Column files: one point per line, ``2theta intensity`` or ``2theta intensity sigma``,
separated by commas, semicolons, tabs or spaces (sniffed from the first numeric
line and then required on every line; with ';' or tabs a decimal comma is
accepted). Lines starting with '#' or '!' are comments, text after '#' on a data
line is ignored, and non-numeric lines before the first numeric line are header
lines (column names; kept in ``metadata["header"]``). A wavelength is taken from
header comments of the form ``# wavelengths_angstrom: 1.54056 1.54439`` with
``# line_weights: 1 0.5`` (what :meth:`MeasuredPattern.write_xy` writes) or
``# wavelength: 1.5406`` / ``! lambda = 1.5406 A``.

"Start step end" files: the first numeric line holds three numbers, the start
angle, the step and the end angle in degrees 2-theta; every following line holds
one or several counts. The number of counts must equal round((end - start) / step) + 1
(a third value above 180 that equals the number of counts is read as the number
of points instead). 2-theta is start + i * step.

Files with four or more columns are refused (say which two or three columns to keep
by exporting them).
"""
from __future__ import annotations

import math
import re

import numpy as np

from .pattern import MAX_POINTS, PatternFormatError, build_pattern

__all__ = ["parse_text", "read_text"]

_DELIMITERS = (",", ";", "\t", None)
_DELIM_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", None: "whitespace"}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_WL_LIST = re.compile(r"wavelengths?_angstrom\s*[:=]\s*(.+)$", re.I)
_WEIGHTS = re.compile(r"line_weights\s*[:=]\s*(.+)$", re.I)
_WL_ONE = re.compile(r"\b(?:wavelength|lambda)\w*\s*[:=]?\s*" + _NUMBER + r"\s*(a|å|angstroms?|ang)?\b", re.I)
_MAX_HEADER_LINES = 200


def _split(line: str, delim):
    tokens = line.split() if delim is None else [t.strip() for t in line.split(delim)]
    if delim is not None and tokens and tokens[-1] == "" and len(tokens) > 1:
        tokens = tokens[:-1]  # a trailing delimiter ("1.0,2.0,") is not a missing value
    return tokens


def _to_float(token: str, delim) -> float:
    if delim in (";", "\t") and "," in token and "." not in token:
        token = token.replace(",", ".")
    return float(token)


def _numeric(line: str, delim):
    tokens = _split(line, delim)
    if not tokens:
        return None
    try:
        if delim in (",", None):
            return list(map(float, tokens))
        return [_to_float(t, delim) for t in tokens]
    except ValueError:
        return None


def _numbers_after(text: str):
    out = []
    for tok in re.split(r"[\s,;]+", text.strip()):
        if not tok:
            continue
        try:
            out.append(float(tok))
        except ValueError:
            break
    return out


def _header_wavelength(comments: list[str]):
    """(wavelengths, weights) from header comments, or (None, None)."""
    wls = wts = None
    for c in comments:
        m = _WL_LIST.search(c)
        if m and _numbers_after(m.group(1)):
            wls = _numbers_after(m.group(1))
        m = _WEIGHTS.search(c)
        if m and _numbers_after(m.group(1)):
            wts = _numbers_after(m.group(1))
    if wls is not None:
        if wts is not None and len(wts) != len(wls):
            wts = None
        return wls, wts
    for c in comments:
        m = _WL_ONE.search(c)
        if m:
            return [float(m.group(1))], None
    return None, None


def parse_text(text: str, source: str) -> dict:
    """Arrays and metadata of a column or start-step-end text pattern (no validation
    of the values beyond parsing; :func:`read_text` validates)."""
    comments: list[str] = []
    header: list[str] = []
    rows: list[list[float]] = []
    row_lines: list[int] = []
    delim = "unset"
    n_values = 0
    n_header_checked = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line[0] in "#!":
            if not rows:
                comments.append(line[1:].strip())
            continue
        if "#" in line:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
        if delim == "unset":
            for cand in _DELIMITERS:
                if cand is not None and cand not in line:
                    continue
                vals = _numeric(line, cand)
                if vals is not None:
                    delim = cand
                    break
            else:
                n_header_checked += 1
                if n_header_checked > _MAX_HEADER_LINES:
                    raise PatternFormatError(
                        f"no numeric data in the first {_MAX_HEADER_LINES} non-comment lines; not a column "
                        "text pattern (expected lines like '10.02 1234')", source, lineno)
                header.append(line)
                continue
        else:
            vals = _numeric(line, delim)
            if vals is None:
                tokens = _split(line, delim)
                bad = next((t for t in tokens if _numeric(t, delim) is None), "")
                what = "a missing value (empty field)" if bad == "" else f"{bad[:40]!r} is not a number"
                raise PatternFormatError(
                    f"{what}; expected numbers separated by {_DELIM_NAMES[delim]} like the first data line "
                    f"(line {row_lines[0]})", source, lineno)
        rows.append(vals)
        row_lines.append(lineno)
        n_values += len(vals)
        if n_values > 3 * MAX_POINTS + 3:
            raise PatternFormatError(f"more than {MAX_POINTS} data points; refusing to read further", source, lineno)
    if not rows:
        raise PatternFormatError("no numeric data lines found (only comments or headers)", source)

    meta = {"header": header, "comments": comments, "delimiter": _DELIM_NAMES[delim]}
    widths = {len(r) for r in rows}
    first = rows[0]
    columns_ok = len(widths) == 1 and len(first) in (2, 3) and len(rows) > 1
    if columns_ok:
        x = np.array([r[0] for r in rows])
        dx = np.diff(x)
        if np.all(dx > 0) or np.all(dx < 0) or len(first) == 2:
            return _columns(rows, row_lines, meta)
    if len(first) == 3 and len(rows) > 1:
        if not columns_ok:
            return _start_step_end(rows, row_lines, meta, source)
        try:  # three numbers per line and a non-monotonic first column: start-step-end with 3 counts a line?
            return _start_step_end(rows, row_lines, dict(meta), source)
        except PatternFormatError:
            pass
    if columns_ok:
        return _columns(rows, row_lines, meta)  # non-monotonic: validation names the line
    if len(first) not in (2, 3):
        raise PatternFormatError(
            f"the first data line has {len(first)} values; a column pattern has 2 (2theta, intensity) or 3 "
            "(2theta, intensity, sigma) columns, a start-step-end file starts with 3 numbers", source, row_lines[0])
    if len(rows) == 1:
        raise PatternFormatError("only one data line", source, row_lines[0])
    i = next(k for k, r in enumerate(rows) if len(r) != len(first))
    raw = text.splitlines()[row_lines[i] - 1].split("#", 1)[0].rstrip()
    hint = " (a missing value: the line ends with its delimiter)" if delim and raw.endswith(delim) else ""
    raise PatternFormatError(f"{len(rows[i])} values on this line but {len(first)} on the first data line "
                             f"(line {row_lines[0]}){hint}; every line needs the same columns", source, row_lines[i])


def _columns(rows, row_lines, meta):
    arr = np.array(rows, dtype=np.float64)
    meta["layout"] = "columns"
    if meta["header"]:
        meta["columns"] = re.split(r"[,;\t ]+", meta["header"][-1].strip())
    return {"two_theta": arr[:, 0], "intensity": arr[:, 1], "sigma": arr[:, 2] if arr.shape[1] == 3 else None,
            "lines": np.asarray(row_lines), "meta": meta}


def _start_step_end(rows, row_lines, meta, source):
    start, step, third = rows[0]
    hdr = row_lines[0]
    counts = [v for r in rows[1:] for v in r]
    lines = np.repeat(np.asarray(row_lines[1:]), [len(r) for r in rows[1:]])
    n = len(counts)
    if not (math.isfinite(start) and math.isfinite(step) and math.isfinite(third)) or step <= 0:
        raise PatternFormatError(f"start-step-end header '{start:g} {step:g} {third:g}': the step must be a "
                                 "positive number of degrees", source, hdr)
    if third > 180 and float(third).is_integer() and int(third) == n:
        n_expected, end, meaning = n, start + (n - 1) * step, "number of points"
    else:
        if third <= start:
            raise PatternFormatError(
                f"start-step-end header '{start:g} {step:g} {third:g}': the end angle must exceed the start "
                "(or the lines do not form a 2- or 3-column table: their column counts differ)", source, hdr)
        n_expected, end, meaning = int(round((third - start) / step)) + 1, third, "end angle"
        if n_expected > MAX_POINTS:
            raise PatternFormatError(f"start-step-end header implies {n_expected} points, more than {MAX_POINTS}",
                                     source, hdr)
    if n != n_expected:
        raise PatternFormatError(
            f"start-step-end header says start {start:g}, step {step:g}, {meaning} {third:g}, i.e. {n_expected} "
            f"counts, but the file has {n} counts (lines {row_lines[1]}-{row_lines[-1]}); the file is truncated "
            "or the header is not start/step/end", source, hdr)
    meta.update(layout="start step end", start_deg=start, step_deg=step, end_deg=end)
    return {"two_theta": start + step * np.arange(n, dtype=np.float64), "intensity": np.asarray(counts),
            "sigma": None, "lines": lines, "meta": meta}


def read_text(text: str, source: str, wavelength=None, notes=()):
    """MeasuredPattern from column or start-step-end text (see the module docstring)."""
    parsed = parse_text(text, source)
    meta = parsed["meta"]
    meta["notes"] = list(notes)
    wls, wts = _header_wavelength(meta["comments"])
    return build_pattern(parsed["two_theta"], parsed["intensity"], parsed["sigma"], source=source, fmt="text",
                         file_wavelengths=wls, file_weights=wts, wavelength=wavelength, metadata=meta,
                         lines=parsed["lines"])
