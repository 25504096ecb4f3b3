"""The measured pattern container, its validation and the errors readers raise.

Every reader in :mod:`xrdflow.io` builds its arrays and hands them to
:func:`build_pattern`, which checks them the same way for every format
(finite, non-negative counts, strictly increasing 2-theta, sane sizes) and
resolves the radiation (file first, then the caller's ``wavelength=``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..radiation import TUBES, Radiation, parse_radiation

__all__ = [
    "MeasuredPattern", "PatternFormatError", "build_pattern", "radiation_from_lines",
    "MAX_FILE_BYTES", "MAX_POINTS", "MIN_POINTS",
]

#: Files larger than this are refused before reading (a powder pattern is at most a few MB).
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Patterns with more points than this are refused (a 0.001 deg step over 180 deg is 180,000 points).
MAX_POINTS = 10_000_000
#: Patterns with fewer points than this are refused: nothing can be fitted or searched on them.
MIN_POINTS = 10


class PatternFormatError(ValueError):
    """A measured-pattern file that cannot be read; the message names the file and,
    where it is known, the line (``source:line: what is wrong``).

    Attributes ``source`` (path or description), ``line`` (1-based or None) and
    ``reason`` (the message without the location).
    """

    def __init__(self, reason: str, source: "str | None" = None, line: "int | None" = None):
        self.reason = reason
        self.source = source
        self.line = line
        where = source if source else "<pattern>"
        if line is not None:
            where = f"{where}, line {line}"
        super().__init__(f"{where}: {reason}")


def radiation_from_lines(wavelengths: Sequence[float], weights: "Sequence[float] | None" = None) -> Radiation:
    """A :class:`xrdflow.Radiation` for wavelengths (angstrom) read from a file.

    The name is the tube's ('CuKa', 'CuKa1') when the lines match a tube of
    :data:`xrdflow.radiation.TUBES` to 2e-4 angstrom, else e.g. '1.5406 A'.
    """
    wls = tuple(float(w) for w in wavelengths)
    wts = tuple(float(w) for w in weights) if weights is not None else (1.0,) * len(wls)
    for tube, (ka1, ka2) in TUBES.items():
        if abs(wls[0] - ka1) < 2e-4:
            if len(wls) == 1:
                return Radiation(f"{tube}Ka1", wls, wts)
            if len(wls) == 2 and abs(wls[1] - ka2) < 2e-4:
                return Radiation(f"{tube}Ka", wls, wts)
    return Radiation(" + ".join(f"{w:g}" for w in wls) + " A", wls, wts)


def _check_wavelengths(wavelengths, weights, source):
    wls = tuple(float(w) for w in wavelengths)
    if not wls:
        raise PatternFormatError("the file lists an empty set of wavelengths", source)
    for w in wls:
        if not (math.isfinite(w) and 0.0 < w <= 100.0):
            raise PatternFormatError(
                f"wavelength {w!r} in the file is not a wavelength in angstrom (expected 0 < lambda <= 100)", source)
    if weights is None:
        wts = (1.0,) * len(wls)
    else:
        wts = tuple(float(w) for w in weights)
        if len(wts) != len(wls):
            raise PatternFormatError(f"{len(wls)} wavelengths but {len(wts)} line weights", source)
        if not all(math.isfinite(w) and w >= 0.0 for w in wts) or not any(w > 0 for w in wts):
            raise PatternFormatError(f"line weights {wts} must be finite, >= 0 and not all 0", source)
    return wls, wts


@dataclass(eq=False)
class MeasuredPattern:
    """A measured powder pattern read from a file.

    Attributes:
        two_theta_deg: (N,) float64 degrees 2-theta, strictly increasing.
        intensity: (N,) float64 counts (>= 0, finite).
        sigma: (N,) float64 standard uncertainties of ``intensity`` (> 0), or None when
            the file gives none; consumers then use sqrt(max(I, 1)) (counting statistics).
        wavelengths: wavelengths in angstrom **as stated in the file**, or None when the
            file does not say (a ``wavelength=`` argument then only sets ``radiation``).
        line_weights: relative intensities of ``wavelengths`` (e.g. (1.0, 0.5) for
            K-alpha1/K-alpha2), or None with ``wavelengths``.
        radiation: :class:`xrdflow.Radiation` from the file, else from the reader's
            ``wavelength=`` argument, else None. **Consumers that need a wavelength must
            check for None and ask the user for one** (``read_pattern(..., wavelength="CuKa")``).
        source: the path read (or a description).
        metadata: dict of what else the file said (format, counting time, ...) and
            ``metadata["notes"]``, a list of what the reader changed (e.g. reversed order).
        structure: :class:`xrdflow.Structure` when the file also holds the structure
            (a CIF with atom sites and a profile), else None.

    The constructor validates the arrays exactly like the readers do
    (raises :class:`PatternFormatError`).
    """

    two_theta_deg: np.ndarray
    intensity: np.ndarray
    sigma: "np.ndarray | None" = None
    wavelengths: "tuple[float, ...] | None" = None
    line_weights: "tuple[float, ...] | None" = None
    radiation: "Radiation | None" = None
    source: str = "<pattern>"
    metadata: dict = field(default_factory=dict)
    structure: Any = None

    def __post_init__(self):
        tt, y, s, notes = _validated_arrays(self.two_theta_deg, self.intensity, self.sigma, self.source, None)
        self.two_theta_deg, self.intensity, self.sigma = tt, y, s
        if notes:
            self.metadata.setdefault("notes", []).extend(notes)
        if self.wavelengths is not None:
            wls, wts = _check_wavelengths(self.wavelengths, self.line_weights, self.source)
            self.wavelengths, self.line_weights = wls, wts
        elif self.line_weights is not None:
            raise PatternFormatError("line_weights given without wavelengths", self.source)
        if self.radiation is not None and not isinstance(self.radiation, Radiation):
            self.radiation = parse_radiation(self.radiation)

    def __len__(self) -> int:
        return int(self.two_theta_deg.shape[0])

    def __repr__(self) -> str:
        rad = self.radiation.name if self.radiation is not None else "unknown wavelength"
        return (f"MeasuredPattern({len(self)} points, 2theta {self.two_theta_deg[0]:g}-"
                f"{self.two_theta_deg[-1]:g} deg, {rad}, source={self.source!r})")

    @property
    def sigma_or_counting(self) -> np.ndarray:
        """``sigma`` if the file gave it, else sqrt(max(I, 1)) (Poisson counting statistics)."""
        if self.sigma is not None:
            return self.sigma
        return np.sqrt(np.maximum(self.intensity, 1.0))

    def on_grid(self, two_theta_deg, *, return_mask: bool = False):
        """Intensity linearly interpolated onto another 2-theta grid (degrees).

        Grid points outside the measured range [two_theta_deg[0], two_theta_deg[-1]]
        get 0 (never NaN). With ``return_mask=True`` returns ``(values, inside)``
        where ``inside`` is a boolean array, True where the grid point lies within
        the measured range; otherwise only ``values`` (float64, same shape as the grid).
        The grid may be in any order; it must be finite.
        """
        grid = np.asarray(two_theta_deg, dtype=np.float64)
        if grid.ndim != 1:
            raise ValueError(f"on_grid expects a 1-D array of 2-theta in degrees, got shape {grid.shape}")
        if not np.all(np.isfinite(grid)):
            raise ValueError("on_grid: the target 2-theta grid contains NaN or infinite values")
        tt = self.two_theta_deg
        inside = (grid >= tt[0]) & (grid <= tt[-1])
        values = np.interp(grid, tt, self.intensity, left=0.0, right=0.0)
        values[~inside] = 0.0
        return (values, inside) if return_mask else values

    def write_xy(self, path, *, header: bool = True) -> None:
        """Write ``2theta intensity [sigma]`` columns (whitespace, '#' comment header
        with the source and the radiation) atomically; :func:`xrdflow.io.read_pattern`
        reads the file back with the same arrays and wavelengths (repr round trip)."""
        from .._fileio import atomic_write_text

        cols = [self.two_theta_deg, self.intensity] + ([self.sigma] if self.sigma is not None else [])
        data = np.column_stack(cols)
        lines = []
        if header:
            lines.append(f"# xrdflow measured pattern, {len(self)} points; from {self.source}")
            if self.radiation is not None:
                lines.append(f"# radiation: {self.radiation.name}")
                lines.append("# wavelengths_angstrom: " + " ".join(repr(float(w)) for w in self.radiation.wavelengths))
                lines.append("# line_weights: " + " ".join(repr(float(w)) for w in self.radiation.weights))
            lines.append("# two_theta_deg intensity" + (" sigma" if self.sigma is not None else ""))
        body = "\n".join(" ".join(repr(float(v)) for v in row) for row in data)
        atomic_write_text(path, "\n".join(lines + [body]) + "\n", newline="\n")


def _validated_arrays(two_theta, intensity, sigma, source, lines):
    """Check and normalize the arrays; returns (tt, y, sigma, notes).

    ``lines``: optional (N,) int array of the 1-based file line of each point, used
    in messages (else the message gives the point index)."""
    notes: list[str] = []

    def where(i):
        return int(lines[i]) if lines is not None else None

    def point(i):
        return "" if lines is not None else f"point {i} (0-based): "

    try:
        tt = np.array(two_theta, dtype=np.float64, copy=True)
        y = np.array(intensity, dtype=np.float64, copy=True)
        s = None if sigma is None else np.array(sigma, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise PatternFormatError(f"2-theta, intensity and sigma must be numbers: {exc}", source) from None
    if tt.ndim != 1 or y.ndim != 1 or tt.shape != y.shape or (s is not None and s.shape != tt.shape):
        raise PatternFormatError(
            f"2-theta {tt.shape}, intensity {y.shape}"
            + (f" and sigma {s.shape}" if s is not None else "")
            + " must be 1-D arrays of the same length", source)
    n = tt.shape[0]
    if n < MIN_POINTS:
        raise PatternFormatError(f"only {n} data points; a powder pattern needs at least {MIN_POINTS}", source)
    if n > MAX_POINTS:
        raise PatternFormatError(f"{n} data points is more than the {MAX_POINTS} this reader accepts", source)
    for name, arr in (("2-theta", tt), ("intensity", y), ("sigma", s)):
        if arr is None:
            continue
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            raise PatternFormatError(f"{point(i)}{name} is {float(arr[i])!r} (missing or not a finite number); "
                                     f"{bad.size} such value(s) in all", source, where(i))
    bad = np.flatnonzero(y < 0)
    if bad.size:
        i = int(bad[0])
        raise PatternFormatError(
            f"{point(i)}negative intensity {float(y[i])!r} at 2-theta {tt[i]:g}; measured counts cannot be negative "
            f"({bad.size} negative value(s); a background-subtracted pattern is not raw data - "
            "read the unsubtracted counts)", source, where(i))
    if s is not None:
        bad = np.flatnonzero(s < 0)
        if bad.size:
            i = int(bad[0])
            raise PatternFormatError(f"{point(i)}negative sigma {float(s[i])!r}", source, where(i))
        zero = s == 0
        if zero.any():
            s[zero] = np.sqrt(np.maximum(y[zero], 1.0))
            notes.append(f"{int(zero.sum())} zero sigma value(s) replaced by sqrt(max(I, 1))")
    bad = np.flatnonzero((tt < 0) | (tt > 180))
    if bad.size:
        i = int(bad[0])
        raise PatternFormatError(
            f"{point(i)}2-theta {float(tt[i])!r} is outside 0-180 degrees; is the first column 2-theta in degrees "
            "(not Q, d-spacing, time of flight or centidegrees)?", source, where(i))
    d = np.diff(tt)
    if n > 1 and np.all(d < 0):
        tt, y = tt[::-1].copy(), y[::-1].copy()
        if s is not None:
            s = s[::-1].copy()
        if lines is not None:
            lines = lines[::-1]
        notes.append("2-theta was decreasing; the points were reversed into increasing order")
        d = np.diff(tt)
    dup = np.flatnonzero(d == 0)
    if dup.size:
        i = int(dup[0]) + 1
        raise PatternFormatError(
            f"{point(i)}2-theta {float(tt[i])!r} is repeated ({dup.size} duplicated value(s)); 2-theta must be "
            "strictly increasing (merge or drop repeated points, e.g. overlapping scan ranges)", source, where(i))
    back = np.flatnonzero(d < 0)
    if back.size:
        i = int(back[0]) + 1
        raise PatternFormatError(
            f"{point(i)}2-theta goes back from {float(tt[i - 1])!r} to {float(tt[i])!r}; 2-theta must be monotonic "
            f"({back.size} decrease(s)); is this several scans concatenated?", source, where(i))
    return tt, y, s, notes


def build_pattern(two_theta, intensity, sigma=None, *, source: str, fmt: str,
                  file_wavelengths=None, file_weights=None, wavelength=None,
                  metadata: "dict | None" = None, lines=None, structure=None) -> MeasuredPattern:
    """Validate reader output and resolve the radiation; the common end of every reader.

    Radiation: the file's wavelengths when it states them (if ``wavelength`` is also
    given and disagrees by more than 1e-4 angstrom a warning says the file wins),
    else ``parse_radiation(wavelength)``, else None.
    """
    tt, y, s, notes = _validated_arrays(two_theta, intensity, sigma, source, lines)
    meta = dict(metadata or {})
    meta["format"] = fmt
    meta.setdefault("notes", [])
    meta["notes"] = list(meta["notes"]) + notes
    wls = wts = None
    radiation = None
    if file_wavelengths is not None:
        wls, wts = _check_wavelengths(file_wavelengths, file_weights, source)
        radiation = radiation_from_lines(wls, wts)
        meta["radiation_from"] = "file"
        if wavelength is not None:
            asked = parse_radiation(wavelength)
            if abs(asked.wavelengths[0] - wls[0]) > 1e-4:
                warnings.warn(f"{source} states wavelength {wls[0]:g} A; ignoring wavelength={wavelength!r} "
                              f"({asked.wavelengths[0]:g} A)", UserWarning, stacklevel=3)
                meta["notes"].append(f"wavelength={wavelength!r} ignored: the file states {wls[0]:g} A")
    elif wavelength is not None:
        radiation = parse_radiation(wavelength)
        meta["radiation_from"] = "argument"
    else:
        meta["radiation_from"] = None
    return MeasuredPattern(tt, y, s, wls, wts, radiation, source, meta, structure)
