"""Readers for measured powder patterns.

>>> from xrdflow.io import read_pattern
>>> p = read_pattern("scan.xrdml")                    # or .xy/.xye/.csv/.txt/.dat, .cif, .gsa/.fxye
>>> p.two_theta_deg, p.intensity, p.sigma, p.radiation
>>> y = p.on_grid(sim.two_theta_deg)                   # onto a simulator's grid, 0 outside the scan

Formats (each module's docstring gives the details and what is not read):

* text (:mod:`.text`): 2/3-column .xy/.xye/.csv/.txt/.dat with sniffed delimiter,
  '#'/'!' comments and column-name header lines; "start step end" files.
* CIF powder data (:mod:`.cif_powder`): pdCIF profile loops, the structure too
  when the file has one.
* XRDML (:mod:`.xrdml`): PANalytical XML.
* GSAS (:mod:`.gsas`): constant-wavelength CONST STD/ESD and FXYE banks.

Files may be gzip-compressed. Every error is a :class:`PatternFormatError` (a
ValueError) naming the file and, where known, the line.
"""
from __future__ import annotations

import os

from ._files import decode_text, read_bytes, refuse_known_binary
from .cif_powder import read_cif_powder
from .grid import GridMismatchError, convert_two_theta, pattern_on_model_grid
from .gsas import looks_like_gsas, read_gsas
from .pattern import MAX_FILE_BYTES, MAX_POINTS, MIN_POINTS, MeasuredPattern, PatternFormatError
from .text import read_text
from .xrdml import read_xrdml

__all__ = ["read_pattern", "MeasuredPattern", "PatternFormatError", "FORMATS", "sniff_format",
           "MAX_FILE_BYTES", "MAX_POINTS", "MIN_POINTS", "pattern_on_model_grid", "convert_two_theta",
           "GridMismatchError"]

#: format name -> extensions that select it without looking at the content
FORMATS = {
    "text": (".xy", ".xye", ".csv", ".tsv"),
    "cif": (".cif", ".pdcif", ".rtv"),
    "xrdml": (".xrdml",),
    "gsas": (".gsa", ".gsas", ".gss", ".fxye", ".fxy"),
}
_ALIASES = {"xy": "text", "xye": "text", "csv": "text", "txt": "text", "dat": "text", "columns": "text",
            "pdcif": "cif", "gsa": "gsas", "fxye": "gsas"}


def sniff_format(data: bytes) -> str:
    """'xrdml', 'gsas', 'cif' or 'text' from the first bytes of a file."""
    head = data[:65536].lstrip(b"\xef\xbb\xbf \t\r\n")
    low = head.lower()
    if low.startswith(b"<?xml") or low.startswith(b"<xrdmeasurements") or b"<xrdmeasurements" in low[:4096]:
        return "xrdml"
    text = head.decode("latin-1")
    if looks_like_gsas(text):
        return "gsas"
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.lower().startswith("data_"):
            return "cif"
        break
    return "text"


def _extension(source: str) -> str:
    name = source.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1]


def read_pattern(path, wavelength=None, format=None, *, block=None, bank=None, scan=None) -> MeasuredPattern:
    """Read a measured powder pattern.

    path: the file (str or os.PathLike; may be gzip-compressed).
    wavelength: used when the file states no wavelength; anything
        ``xrdflow.Simulator(radiation=...)`` accepts ("CuKa", 1.5406, a Radiation).
        When the file states one, the file wins (a warning if they disagree).
        With neither, ``pattern.radiation`` is None and consumers that need a
        wavelength must ask for one.
    format: 'text' (aliases xy, xye, csv, txt, dat), 'cif', 'xrdml' or 'gsas';
        default from the extension (.xy .xye .csv .tsv / .cif / .xrdml /
        .gsa .gsas .gss .fxye), else sniffed from the content (.dat, .txt, .raw, others).
    block: CIF data block holding the profile, when the file has several.
    bank: GSAS bank number, when the file has several.
    scan: XRDML scan index, when the file has several.

    Returns a :class:`MeasuredPattern`; raises :class:`PatternFormatError` (a
    ValueError) naming the file and line for anything malformed,
    FileNotFoundError for a missing file.
    """
    data, source = read_bytes(path)
    if format is not None:
        if not isinstance(format, str):
            raise TypeError(f"format must be a string, not {type(format).__name__}")
        fmt = _ALIASES.get(format.lower(), format.lower())
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {format!r}; use one of {', '.join(FORMATS)} "
                             f"(or {', '.join(_ALIASES)}), or None to detect it")
    else:
        ext = _extension(source)
        fmt = next((f for f, exts in FORMATS.items() if ext in exts), None) or sniff_format(data)
    for name, value, owner in (("block", block, "cif"), ("bank", bank, "gsas"), ("scan", scan, "xrdml")):
        if value is not None and fmt != owner:
            raise ValueError(f"{name}= applies to {owner} files, but {source!r} is read as {fmt}")
    if fmt == "xrdml":
        refuse_known_binary(data, source)
        return read_xrdml(data, source, wavelength, scan=scan)
    text, notes = decode_text(data, source)
    if fmt == "cif":
        return read_cif_powder(text, source, wavelength, notes, block=block)
    if fmt == "gsas":
        return read_gsas(text, source, wavelength, notes, bank=bank)
    return read_text(text, source, wavelength, notes)
