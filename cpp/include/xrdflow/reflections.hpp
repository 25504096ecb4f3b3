// Enumerating the reciprocal lattice inside a resolution sphere.
#pragma once
#include <cmath>

#include "common.hpp"
#include "lattice.hpp"

namespace xrdflow {

// Index bounds of the box that contains every h with d(h) >= d_min:
// |h_i| = |a_i . d*| <= |a_i| / d_min (Cauchy-Schwarz), so h_max = floor(|a| / d_min).
XF_INLINE Miller hkl_bounds(const Metric& g, double d_min) {
  return Miller{static_cast<int>(std::floor(std::sqrt(g.g11) / d_min)),
                static_cast<int>(std::floor(std::sqrt(g.g22) / d_min)),
                static_cast<int>(std::floor(std::sqrt(g.g33) / d_min))};
}

// Expected number of reciprocal-lattice points with d >= d_min:
// the sphere volume (4 pi / 3) d_min^-3 divided by the reciprocal cell volume 1/V.
XF_INLINE double hkl_count_estimate(double volume_angstrom3, double d_min) {
  return 4.0 * kPi / 3.0 * volume_angstrom3 / (d_min * d_min * d_min);
}

}  // namespace xrdflow
