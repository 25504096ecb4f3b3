"""Physically meaningful augmentation of powder patterns.

An :class:`Augmentation` is a set of distributions.  Each sample of each
epoch draws its own values from them with a counter-based generator keyed by
(seed, epoch, structure index), and the C++ core re-renders the cached
reflections of the structure with those values: peaks move because the
lattice is strained, widen because crystallites are small, change height
because of texture, and so on.  Nothing is done by warping a finished pattern.

Ranges are ``(low, high)`` tuples (uniform unless said otherwise; equal ends
mean a fixed value); probabilities are in [0, 1].

=======================  ====================================================  ===========================
field                    physical meaning                                      realistic() default
=======================  ====================================================  ===========================
strain                   max abs. component of a random symmetric strain       0.01 (DFT-relaxed cells
                         tensor applied to the lattice, averaged over the      deviate by ~1-2 %, Haas et
                         Laue group so the symmetry is kept; d recomputed      al. PRB 79, 085104, 2009)
                         from hkl and the strained metric
crystallite_size_nm      Scherrer size (log-uniform); None keeps the           (20, 200) nm
                         simulator's
microstrain              apparent strain eps, Gaussian width 4 eps tan(th);    (0, 0.002)
                         None keeps the simulator's
width_scale              factor on the Caglioti U, V, W (instrument jitter)    (0.8, 1.5)
zero_shift_deg           added to every peak position (degrees 2-theta)        (-0.05, 0.05)
displacement_mm          sample height error s: shift -2 s cos(th) / R         (-0.1, 0.1) mm, R = 240 mm
goniometer_radius_mm     R of the Bragg-Brentano goniometer
kalpha2_probability      chance that the K-alpha2 line is present (doublet     0.9 (most lab data is not
                         sources only)                                         monochromated)
kalpha2_ratio            I(K-alpha2) / I(K-alpha1)                             (0.45, 0.55)
tubes                    tube names to pick from per sample (empty: the        ()
                         simulator's radiation)
po_probability           chance of preferred orientation (March-Dollase)       0.5
march_r                  March-Dollase r (< 1 plates, > 1 needles)             (0.7, 1.3)
po_direction             preferred hkl, or None for one of the seven           None
                         lowest-index directions at random
b_extra                  extra overall Debye-Waller B (angstrom^2)             (0.0, 1.0)
mixture_probability      chance the sample is a mixture of 2..max_phases       0.0 (single-phase training)
max_phases               phases of a mixture (2 or 3), weight fractions        2
                         uniform on the simplex, Rietveld scale W/(mass V)
background_probability   chance of a Chebyshev background                      0.9
background_level         its height relative to the strongest peak             (0.0, 0.1)
chebyshev_order          its polynomial order                                  4
hump_probability         chance of an amorphous hump (broad Gaussian)          0.3
hump_center_deg,         its centre and FWHM in degrees 2-theta, and height    (15, 35), (5, 15),
hump_fwhm_deg,           relative to the strongest peak                        (0.0, 0.1)
hump_level
noise_probability        chance of counting noise                              1.0
counts                   counts in the strongest point (log-uniform):          (1e3, 1e5)
                         Poisson noise (exact below 20 counts, Cornish-Fisher
                         expansion of Poisson + read noise above)
read_noise               Gaussian read noise (counts, standard deviation)      (0.0, 3.0)
scale                    overall scale factor after normalization              (1.0, 1.0)
=======================  ====================================================  ===========================
"""
from __future__ import annotations

import functools

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from .radiation import parse_radiation

Range = tuple[float, float]


def _check_range(name: str, value, *, low: float = -math.inf, high: float = math.inf, positive=False,
                 owner: str = "Augmentation") -> Range:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}.{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{owner}.{name} must be finite, got {value!r}")
    if lo > hi:
        raise ValueError(f"{owner}.{name} is reversed: low {lo} > high {hi}")
    if lo < low or hi > high or (positive and lo <= 0):
        bound = "> 0" if positive else f"within [{low}, {high}]"
        raise ValueError(f"{owner}.{name} must be {bound}, got {value!r}")
    return lo, hi


def _check_probability(name: str, value, owner: str = "Augmentation") -> float:
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}.{name} is a probability and must be in [0, 1], got {value!r}")
    return p


@dataclass(frozen=True)
class Augmentation:
    """Distributions of sample and instrument effects (see the module docstring table)."""

    strain: float = 0.0
    crystallite_size_nm: Optional[Range] = None
    microstrain: Optional[Range] = None
    width_scale: Range = (1.0, 1.0)
    zero_shift_deg: Range = (0.0, 0.0)
    displacement_mm: Range = (0.0, 0.0)
    goniometer_radius_mm: float = 240.0
    kalpha2_probability: float = 1.0
    kalpha2_ratio: Range = (0.5, 0.5)
    tubes: tuple[str, ...] = ()
    po_probability: float = 0.0
    march_r: Range = (1.0, 1.0)
    po_direction: Optional[tuple[int, int, int]] = None
    b_extra: Range = (0.0, 0.0)
    mixture_probability: float = 0.0
    max_phases: int = 2
    background_probability: float = 0.0
    background_level: Range = (0.0, 0.0)
    chebyshev_order: int = 4
    hump_probability: float = 0.0
    hump_center_deg: Range = (15.0, 35.0)
    hump_fwhm_deg: Range = (5.0, 15.0)
    hump_level: Range = (0.0, 0.0)
    noise_probability: float = 0.0
    counts: Range = (1e4, 1e4)
    read_noise: Range = (0.0, 0.0)
    scale: Range = (1.0, 1.0)

    def __post_init__(self):
        s = float(self.strain)
        if not 0.0 <= s < 0.2:
            raise ValueError(f"Augmentation.strain is a strain and must be in [0, 0.2), got {self.strain!r}")
        if self.crystallite_size_nm is not None:
            _check_range("crystallite_size_nm", self.crystallite_size_nm, positive=True)
        if self.microstrain is not None:
            _check_range("microstrain", self.microstrain, low=0.0, high=0.1)
        _check_range("width_scale", self.width_scale, positive=True)
        _check_range("zero_shift_deg", self.zero_shift_deg, low=-5.0, high=5.0)
        _check_range("displacement_mm", self.displacement_mm, low=-5.0, high=5.0)
        if not float(self.goniometer_radius_mm) > 0:
            raise ValueError(f"Augmentation.goniometer_radius_mm must be > 0, got {self.goniometer_radius_mm!r}")
        _check_probability("kalpha2_probability", self.kalpha2_probability)
        _check_range("kalpha2_ratio", self.kalpha2_ratio, low=0.0, high=1.0)
        for tube in self.tubes:
            if len(parse_radiation(tube).wavelengths) not in (1, 2):
                raise ValueError(f"Augmentation.tubes: {tube!r} is not a tube")
        _check_probability("po_probability", self.po_probability)
        _check_range("march_r", self.march_r, positive=True)
        if self.po_direction is not None:
            d = tuple(self.po_direction)
            if len(d) != 3 or not all(isinstance(v, (int, np.integer)) for v in d) or not any(d):
                raise ValueError(f"Augmentation.po_direction must be three integers hkl, not all 0, got {d!r}")
        _check_range("b_extra", self.b_extra, low=-1.0, high=20.0)
        _check_probability("mixture_probability", self.mixture_probability)
        if self.max_phases not in (2, 3):
            raise ValueError(f"Augmentation.max_phases must be 2 or 3, got {self.max_phases!r}")
        _check_probability("background_probability", self.background_probability)
        _check_range("background_level", self.background_level, low=0.0, high=100.0)
        if not (isinstance(self.chebyshev_order, int) and 0 <= self.chebyshev_order <= 15):
            raise ValueError(f"Augmentation.chebyshev_order must be an integer in [0, 15], got {self.chebyshev_order!r}")
        _check_probability("hump_probability", self.hump_probability)
        _check_range("hump_center_deg", self.hump_center_deg, low=0.0, high=180.0)
        _check_range("hump_fwhm_deg", self.hump_fwhm_deg, positive=True)
        _check_range("hump_level", self.hump_level, low=0.0, high=100.0)
        _check_probability("noise_probability", self.noise_probability)
        _check_range("counts", self.counts, positive=True, high=1e12)
        _check_range("read_noise", self.read_noise, low=0.0)
        _check_range("scale", self.scale, positive=True)

    @classmethod
    def none(cls) -> "Augmentation":
        """No augmentation: clean patterns, identical to ``Simulator.render`` without it."""
        return cls()

    @classmethod
    def realistic(cls) -> "Augmentation":
        """Laboratory-like variation (Bragg-Brentano, Cu tube); see the module table."""
        return cls(strain=0.01, crystallite_size_nm=(20.0, 200.0), microstrain=(0.0, 0.002), width_scale=(0.8, 1.5),
                   zero_shift_deg=(-0.05, 0.05), displacement_mm=(-0.1, 0.1), kalpha2_probability=0.9,
                   kalpha2_ratio=(0.45, 0.55), po_probability=0.5, march_r=(0.7, 1.3), b_extra=(0.0, 1.0),
                   background_probability=0.9, background_level=(0.0, 0.1), hump_probability=0.3,
                   hump_level=(0.0, 0.1), noise_probability=1.0, counts=(1e3, 1e5), read_noise=(0.0, 3.0))

    @property
    def is_none(self) -> bool:
        return self == _default_augmentation()

    def to_dict(self) -> dict:
        """Plain values (lists for tuples), e.g. for a YAML/JSON config."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def core_config(self) -> dict:
        """The flat numbers the C++ core reads (bindings/augment.cpp)."""
        tubes = np.zeros((len(self.tubes), 2))
        for i, name in enumerate(self.tubes):
            wl = parse_radiation(name).wavelengths
            tubes[i, : len(wl)] = wl
        size = self.crystallite_size_nm or (0.0, 0.0)
        micro = self.microstrain if self.microstrain is not None else (-1.0, -1.0)
        direction = self.po_direction or (0, 0, 1)
        cfg = dict(tubes=np.ascontiguousarray(tubes), kalpha2_probability=self.kalpha2_probability,
                   radius_mm=float(self.goniometer_radius_mm), strain=float(self.strain),
                   po_probability=self.po_probability, po_random_direction=int(self.po_direction is None),
                   mixture_probability=self.mixture_probability, max_phases=self.max_phases,
                   background_probability=self.background_probability, chebyshev_order=self.chebyshev_order,
                   hump_probability=self.hump_probability, noise_probability=self.noise_probability)
        for key, (lo, hi) in dict(kalpha2_ratio=self.kalpha2_ratio, width_scale=self.width_scale, size_nm=size,
                                  microstrain=micro, zero_shift=self.zero_shift_deg,
                                  displacement=self.displacement_mm, po_r=self.march_r, b_extra=self.b_extra,
                                  background=self.background_level, hump_center=self.hump_center_deg,
                                  hump_fwhm=self.hump_fwhm_deg, hump=self.hump_level, counts=self.counts,
                                  read_noise=self.read_noise, scale=self.scale).items():
            cfg[f"{key}_lo"], cfg[f"{key}_hi"] = float(lo), float(hi)
        for k in range(3):
            cfg[f"po_direction_{k}"] = int(direction[k])
        return cfg


@functools.lru_cache(maxsize=1)
def _default_augmentation() -> "Augmentation":
    """``Augmentation()``, built once (``is_none`` compares with it on every render call)."""
    return Augmentation()


@functools.lru_cache(maxsize=8)
def _parameter_layout(names: tuple) -> tuple:
    """Column indices of each output of :func:`split_parameters` for the core's column ``names``."""
    groups = {"strain": [n for n in names if n.startswith("strain_")],
              "po_direction": ["po_h", "po_k", "po_l"],
              "phases": [n for n in names if n.startswith("phase_")],
              "fractions": [n for n in names if n.startswith("fraction_")]}
    grouped = {n for g in groups.values() for n in g}
    layout = [(key, [names.index(n) for n in members]) for key, members in groups.items()]
    layout += [(name, names.index(name)) for name in names if name not in grouped]
    return tuple(layout)


def split_parameters(names: list[str], table: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample parameter columns from the core, grouped: strain (B, 6),
    po_direction (B, 3) int, phases (B, 3) int (-1 = none), fractions (B, 3),
    the rest one array each."""
    out = {}
    for key, cols in _parameter_layout(tuple(names)):
        block = table[:, cols]  # a list of columns gives a (B, k) copy, one column a (B,) view
        out[key] = block.astype(np.int64) if key in ("po_direction", "phases", "n_phases") else block
    return out


#: a constant of the scan-range draws' key, so they never coincide with another stream keyed by the same triple
_SCAN_STREAM = 0x5CA7


@dataclass(frozen=True)
class ScanRange:
    """Partial scans: the 2-theta range a measured pattern covers, drawn per sample.

    A laboratory scan rarely spans the whole grid a model reads (10-80 deg is common, 15-50 deg
    happens), and ``xrdflow classify`` / ``search`` fill the grid points outside the scan with the
    smallest measured intensity (:func:`xrdflow.io.pattern_on_model_grid`).  With probability
    ``probability`` a rendered pattern is cut the same way: its first and last measured 2-theta are
    drawn uniformly from ``start_deg`` and ``end_deg`` (degrees 2-theta) and every point outside
    takes the smallest value inside.  This is measurement geometry applied to the finished pattern,
    not physics of the sample, so it lives outside the C++ :class:`Augmentation`.

    Draws are keyed by (seed, epoch, structure index) through numpy's SeedSequence, like the
    core's, so a sample's range does not depend on the batch it is in.
    """

    probability: float = 0.0
    start_deg: Range = (5.0, 30.0)
    end_deg: Range = (45.0, 90.0)

    def __post_init__(self):
        object.__setattr__(self, "probability", _check_probability("probability", self.probability, "ScanRange"))
        start = _check_range("start_deg", self.start_deg, low=0.0, high=180.0, owner="ScanRange")
        end = _check_range("end_deg", self.end_deg, low=0.0, high=180.0, owner="ScanRange")
        if start[1] >= end[0]:
            raise ValueError(f"ScanRange.start_deg {start} must lie below end_deg {end} (the latest start "
                             "must come before the earliest end), else a scan could be empty")
        object.__setattr__(self, "start_deg", start)
        object.__setattr__(self, "end_deg", end)

    @classmethod
    def fixed(cls, start_deg: float, end_deg: float) -> "ScanRange":
        """Every pattern cut to ``[start_deg, end_deg]`` (e.g. to evaluate a model on short scans)."""
        return cls(probability=1.0, start_deg=(start_deg, start_deg), end_deg=(end_deg, end_deg))

    def draw(self, indices, seed: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(start_deg, end_deg) per index, float64 (B,); +-inf where the sample keeps its full range."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        start = np.full(len(idx), -np.inf)
        end = np.full(len(idx), np.inf)
        if self.probability == 0.0:
            return start, end
        for j, i in enumerate(idx):
            u = np.random.default_rng([int(seed), int(epoch), int(i), _SCAN_STREAM]).random(3)
            if u[0] < self.probability:
                start[j] = self.start_deg[0] + u[1] * (self.start_deg[1] - self.start_deg[0])
                end[j] = self.end_deg[0] + u[2] * (self.end_deg[1] - self.end_deg[0])
        return start, end

    def apply(self, y: np.ndarray, two_theta_deg, indices, seed: int, epoch: int = 0) -> dict[str, np.ndarray]:
        """Cut the (B, n_points) float patterns ``y`` in place; returns the drawn ``scan_start_deg`` and
        ``scan_end_deg`` (B,) (the grid's ends for uncut samples)."""
        grid = np.asarray(two_theta_deg, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != len(grid) or y.shape[0] != np.size(indices):
            raise ValueError(f"ScanRange.apply: patterns of shape {y.shape} do not match {np.size(indices)} "
                             f"indices and a grid of {len(grid)} points")
        start, end = self.draw(indices, seed, epoch)
        for j in np.flatnonzero(np.isfinite(start)):
            inside = (grid >= start[j]) & (grid <= end[j])
            if inside.any():  # a range that misses the grid leaves the pattern whole
                y[j, ~inside] = y[j, inside].min()
        return {"scan_start_deg": np.maximum(start, grid[0]), "scan_end_deg": np.minimum(end, grid[-1])}


__all__ = ["Augmentation", "ScanRange", "split_parameters"]
