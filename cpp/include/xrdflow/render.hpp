// Rendering peaks onto a sampled axis.
#pragma once
#include "common.hpp"
#include "profile.hpp"

namespace xrdflow {

// First index i in [0, n) with grid[i] >= x (n if none); grid ascending.
XF_INLINE int lower_index(const double* grid, int n, double x) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (grid[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Add `area` times a unit-area pseudo-Voigt centred at `centre` to out[], on
// the points of `grid` within centre +- cutoff.  Profiles are point-sampled
// (as in Rietveld programs), so the step should be finer than the FWHM.
XF_INLINE void add_peak(const double* grid, int n, double centre, double area, double fwhm, double eta,
                        double cutoff, double* out) {
  if (!(fwhm > 0.0)) return;
  for (int i = lower_index(grid, n, centre - cutoff); i < n && grid[i] <= centre + cutoff; ++i)
    out[i] += area * pseudo_voigt(grid[i] - centre, fwhm, eta);
}

}  // namespace xrdflow
