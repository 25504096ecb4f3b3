// Rendering peaks onto a sampled axis.
#pragma once
#include <cmath>

#include "common.hpp"
#include "profile.hpp"

namespace xrdflow {

// Sample points of a pattern, ascending.  Uniform grids (the usual 2-theta
// case) locate a peak window by arithmetic, others by bisection.
struct Grid {
  const double* x;
  int n;
  bool uniform;
  double start, inv_step;
};

// First index i in [0, n) with x[i] >= v (n if none).
XF_INLINE int lower_index(const Grid& g, double v) {
  int lo = 0, hi = g.n;
  if (g.uniform) {
    double guess = std::ceil((v - g.start) * g.inv_step);
    guess = guess < 0.0 ? 0.0 : (guess > g.n ? g.n : guess);
    int i = static_cast<int>(guess);
    // The arithmetic guess is exact up to rounding; step to the true index.
    while (i > 0 && g.x[i - 1] >= v) --i;
    while (i < g.n && g.x[i] < v) ++i;
    return i;
  }
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (g.x[mid] < v) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Add `area` times a unit-area pseudo-Voigt
//   pV(x) = eta 2/(pi H) / (1 + 4x^2/H^2) + (1 - eta) (2/H) sqrt(ln2/pi) exp(-4 ln2 x^2/H^2)
// (Thompson, Cox & Hastings 1987, eq. 1) centred at `centre` to out[], on
// the points of `grid` within each component's cutoff (profile_cutoffs).  The
// components are summed in separate loops: the Lorentzian tail is long but
// needs no exp, the Gaussian needs exp but is short.  Profiles are
// point-sampled (as in Rietveld programs), so the step should be finer than
// the FWHM.
XF_INLINE void add_peak(const Grid& g, double centre, double area, double fwhm, double eta, const Cutoffs& cut,
                        double* __restrict__ out) {
  if (!(fwhm > 0.0)) return;
  const double* __restrict__ grid = g.x;
  const double inv_h2 = 4.0 / (fwhm * fwhm);
  if (cut.lorentz > 0.0) {
    const double amp = area * eta * 2.0 / (kPi * fwhm);
    const int hi = lower_index(g, centre + cut.lorentz);
    for (int i = lower_index(g, centre - cut.lorentz); i < hi; ++i) {
      const double dx = grid[i] - centre;
      out[i] += amp / (1.0 + inv_h2 * dx * dx);
    }
  }
  if (cut.gauss > 0.0) {
    const double amp = area * (1.0 - eta) * 2.0 * std::sqrt(kLn2 / kPi) / fwhm;
    const double k = kLn2 * inv_h2;
    const int hi = lower_index(g, centre + cut.gauss);
    for (int i = lower_index(g, centre - cut.gauss); i < hi; ++i) {
      const double dx = grid[i] - centre;
      out[i] += amp * std::exp(-k * dx * dx);
    }
  }
}

}  // namespace xrdflow
