"""PANalytical / Malvern XRDML (XML) patterns, parsed with xml.etree.ElementTree.

Read: every ``scan`` with a ``dataPoints`` element; 2-theta from
``positions axis="2Theta"`` as ``startPosition``/``endPosition`` (evenly spaced over
the number of intensities) or ``listPositions``; intensities from ``intensities``
or ``counts`` (unit "counts"; a rate in counts/s is multiplied by
``commonCountingTime`` or per-point ``countingTimes``, noted in metadata).
Wavelength from ``usedWavelength``: ``kAlpha1``, ``kAlpha2`` and
``ratioKAlpha2KAlpha1`` give a doublet with weights (1, ratio) unless
``intended="K-Alpha 1"`` (monochromated: kAlpha1 only). Several scans need
``scan=INDEX``. Not read: 2-D/area-detector data (``intensities`` of 2-D scans),
``beamAttenuationFactors`` (intensities are taken as written) and non-2Theta scan axes.

XML safety: files declaring a DOCTYPE or ENTITY are refused before parsing (no
entity expansion, no external entities); Python's expat also limits expansion.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np

from .pattern import MAX_POINTS, PatternFormatError, build_pattern

__all__ = ["read_xrdml"]

_DECL = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.I)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(elem, name):
    return [c for c in elem if _local(c.tag) == name]


def _child(elem, name):
    found = _children(elem, name)
    return found[0] if found else None


def _line_of(data: bytes, needle: bytes, nth: int = 0) -> "int | None":
    pos = -1
    for _ in range(nth + 1):
        pos = data.find(needle, pos + 1)
        if pos < 0:
            return None
    return data.count(b"\n", 0, pos) + 1


def _floats(text: "str | None", what: str, source: str, line):
    tokens = (text or "").split()
    if len(tokens) > MAX_POINTS:
        raise PatternFormatError(f"{what} has {len(tokens)} values, more than {MAX_POINTS}", source, line)
    try:
        return np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise PatternFormatError(f"{what}: {bad[:40]!r} is not a number", source, line) from None


def _is_float(t):
    try:
        float(t)
        return True
    except ValueError:
        return False


def _number(elem, what, source, data):
    try:
        return float((elem.text or "").strip())
    except ValueError:
        raise PatternFormatError(f"<{what}> holds {elem.text!r}, not a number", source,
                                 _line_of(data, f"<{what}".encode())) from None


def _refuse_declarations(data: bytes, source: str) -> None:
    """A tree-less expat pass that stops at a DOCTYPE or ENTITY declaration in any
    encoding (the byte regex above only sees ASCII-compatible ones)."""
    from xml.parsers import expat

    class _Declared(Exception):
        pass

    def refuse(*_args):
        raise _Declared

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except _Declared:
        raise PatternFormatError("XML with a DOCTYPE/ENTITY declaration is refused (XRDML files have none)",
                                 source, parser.CurrentLineNumber) from None
    except expat.ExpatError:
        pass  # reported with its line by ElementTree below


def read_xrdml(data: bytes, source: str, wavelength=None, notes=(), scan=None):
    """MeasuredPattern from the bytes of an .xrdml file (see the module docstring)."""
    m = _DECL.search(data)
    if m:
        raise PatternFormatError("XML with a DOCTYPE/ENTITY declaration is refused (XRDML files have none; "
                                 "entity declarations can expand without bound)", source,
                                 data.count(b"\n", 0, m.start()) + 1)
    _refuse_declarations(data, source)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        raise PatternFormatError(f"not well-formed XML: {exc}", source, line) from None
    if _local(root.tag) not in ("xrdMeasurements", "xrdMeasurement"):
        raise PatternFormatError(f"root element is <{_local(root.tag)}>, not <xrdMeasurements>: not an XRDML file",
                                 source, 1)
    scans = [s for s in root.iter() if _local(s.tag) == "scan" and _child(s, "dataPoints") is not None]
    if not scans:
        raise PatternFormatError("no <scan> with <dataPoints> in this XRDML file", source)
    if scan is None:
        if len(scans) > 1:
            raise PatternFormatError(f"{len(scans)} scans in this file; pass scan=INDEX (0..{len(scans) - 1})", source)
        index = 0
    else:
        if not (isinstance(scan, int) and -len(scans) <= scan < len(scans)):
            raise PatternFormatError(f"scan={scan!r} out of range: the file has {len(scans)} scan(s)", source)
        index = scan % len(scans)
    sc = scans[index]
    dp = _child(sc, "dataPoints")
    meta = {"notes": list(notes), "scan_index": index, "scan_axis": sc.get("scanAxis"),
            "scan_mode": sc.get("mode"), "status": sc.get("status")}
    ynode = _child(dp, "intensities")
    if ynode is None:
        ynode = _child(dp, "counts")
    if ynode is None:
        raise PatternFormatError("<dataPoints> has neither <intensities> nor <counts>", source)
    yname = _local(ynode.tag)
    yline = _line_of(data, f"<{yname}".encode(), index)
    y = _floats(ynode.text, f"<{yname}>", source, yline)
    unit = (ynode.get("unit") or "counts").strip()
    meta["intensity_unit"] = unit

    pos = next((p for p in _children(dp, "positions") if (p.get("axis") or "").lower() == "2theta"), None)
    if pos is None:
        axes = [p.get("axis") for p in _children(dp, "positions")]
        raise PatternFormatError(f"no <positions axis=\"2Theta\"> (axes: {axes}); only 2-theta scans are read",
                                 source)
    lst = _child(pos, "listPositions")
    if lst is not None:
        x = _floats(lst.text, "<listPositions>", source, _line_of(data, b"<listPositions", 0))
        if x.size != y.size:
            raise PatternFormatError(f"<listPositions> has {x.size} values but <{yname}> has {y.size}", source, yline)
    else:
        start, end = _child(pos, "startPosition"), _child(pos, "endPosition")
        if start is None or end is None:
            raise PatternFormatError("2Theta <positions> without <startPosition>/<endPosition> or <listPositions>",
                                     source)
        a, b = _number(start, "startPosition", source, data), _number(end, "endPosition", source, data)
        if y.size < 2:
            raise PatternFormatError(f"<{yname}> has {y.size} value(s)", source, yline)
        x = np.linspace(a, b, y.size)
    meta["two_theta_deg_range"] = (float(x[0]), float(x[-1]))

    ct = _child(dp, "commonCountingTime")
    if ct is not None:
        meta["counting_time_s"] = _number(ct, "commonCountingTime", source, data)
    per_point = _child(dp, "countingTimes")
    if unit.lower() in ("counts/s", "cps", "counts per second"):
        if per_point is not None:
            t = _floats(per_point.text, "<countingTimes>", source, _line_of(data, b"<countingTimes", 0))
            if t.size != y.size:
                raise PatternFormatError(f"<countingTimes> has {t.size} values, <{yname}> {y.size}", source)
        elif ct is not None:
            t = meta["counting_time_s"]
        else:
            raise PatternFormatError(f"<{yname}> in {unit} without a counting time to turn rates into counts", source)
        y = y * t
        meta["notes"].append(f"intensities in {unit} multiplied by the counting time into counts")
    elif unit.lower() != "counts":
        meta["notes"].append(f"intensity unit {unit!r} taken as counts")

    wls = wts = None
    uw = next((e for e in root.iter() if _local(e.tag) == "usedWavelength"), None)
    if uw is not None:
        k1, k2 = _child(uw, "kAlpha1"), _child(uw, "kAlpha2")
        ratio = next((c for c in uw if _local(c.tag).startswith("ratioKAlpha2")), None)
        intended = (uw.get("intended") or "").replace(" ", "").lower()
        meta["wavelength_intended"] = uw.get("intended")
        if k1 is not None:
            wls = [_number(k1, "kAlpha1", source, data)]
            wts = [1.0]
            if k2 is not None and intended not in ("k-alpha1", "kalpha1"):
                r = _number(ratio, _local(ratio.tag), source, data) if ratio is not None else 0.5
                if r > 0:
                    wls.append(_number(k2, "kAlpha2", source, data))
                    wts.append(r)
    try:
        return build_pattern(x, y, None, source=source, fmt="xrdml", file_wavelengths=wls, file_weights=wts,
                             wavelength=wavelength, metadata=meta)
    except PatternFormatError as exc:
        if exc.line is not None:
            raise
        raise PatternFormatError(exc.reason + f" (in <{yname}>)", source, yline) from None
