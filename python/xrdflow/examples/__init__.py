"""Small crystal structures bundled with xrdflow, so that the command line and
the tutorials run on a fresh machine with no files of one's own.

>>> from xrdflow import examples
>>> examples.names()
['NaCl', 'RuO2', 'Si']
>>> s = xf.Structure.from_cif(examples.path("NaCl"))   # doctest: +SKIP

Provenance of every file is in its header comments and in README.md here.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["names", "path", "describe", "EXAMPLES"]

_HERE = Path(__file__).resolve().parent

# name -> (file name, one-line description)
EXAMPLES: dict[str, tuple[str, str]] = {
    "NaCl": ("NaCl.cif", "halite (rock salt), Fm-3m, a = 5.6402 A"),
    "Si": ("Si.cif", "silicon (diamond), Fd-3m origin choice 2, a = 5.43102 A"),
    "RuO2": ("RuO2.cif", "rutile-type RuO2, P4_2/mnm (COD 1538150, from the XRed data set, MIT)"),
}


def names() -> list[str]:
    """Names of the bundled example structures, sorted."""
    return sorted(EXAMPLES, key=str.lower)


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"example name must be a str, got {type(name).__name__}")
    wanted = name.strip().lower().removesuffix(".cif")
    for key in EXAMPLES:
        if key.lower() == wanted:
            return key
    raise ValueError(f"unknown example {name!r}; available: {', '.join(names())}")


def path(name: str) -> Path:
    """Path of the CIF file of a bundled example (case-insensitive name, '.cif' optional)."""
    return _HERE / EXAMPLES[_key(name)][0]


def describe(name: str) -> str:
    """One-line description of a bundled example."""
    return EXAMPLES[_key(name)][1]
