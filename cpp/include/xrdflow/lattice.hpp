// Lattice geometry: metric tensors, d-spacings and Bragg angles.
//
// Lattices are given as 3x3 row-major matrices whose ROWS are the lattice
// vectors a, b, c in Cartesian angstrom.  The direct metric is G = A A^T and
// the reciprocal metric G* = G^-1, so 1/d^2 = h^T G* h (Giacovazzo,
// Fundamentals of Crystallography, 3rd ed., sec. 2.5).
#pragma once
#include <cmath>

#include "common.hpp"

namespace xrdflow {

// Symmetric 3x3 metric stored as (11, 22, 33, 12, 13, 23).
struct Metric {
  double g11, g22, g33, g12, g13, g23;
};

XF_INLINE Metric direct_metric(const double* lattice) {
  const double* a = lattice;
  const double* b = lattice + 3;
  const double* c = lattice + 6;
  auto dot = [](const double* u, const double* v) { return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]; };
  return Metric{dot(a, a), dot(b, b), dot(c, c), dot(a, b), dot(a, c), dot(b, c)};
}

XF_INLINE double metric_determinant(const Metric& g) {
  return g.g11 * (g.g22 * g.g33 - g.g23 * g.g23) - g.g12 * (g.g12 * g.g33 - g.g23 * g.g13) +
         g.g13 * (g.g12 * g.g23 - g.g22 * g.g13);
}

// G* = G^-1 via the adjugate; the caller guarantees det(G) = V^2 > 0.
XF_INLINE Metric reciprocal_metric(const Metric& g) {
  const double inv_det = 1.0 / metric_determinant(g);
  return Metric{(g.g22 * g.g33 - g.g23 * g.g23) * inv_det, (g.g11 * g.g33 - g.g13 * g.g13) * inv_det,
                (g.g11 * g.g22 - g.g12 * g.g12) * inv_det, (g.g13 * g.g23 - g.g12 * g.g33) * inv_det,
                (g.g12 * g.g23 - g.g13 * g.g22) * inv_det, (g.g12 * g.g13 - g.g11 * g.g23) * inv_det};
}

// 1/d^2 in 1/angstrom^2 for reflection h under reciprocal metric gs.
XF_INLINE double inv_d2(const Metric& gs, Miller m) {
  const double h = m.h, k = m.k, l = m.l;
  return h * h * gs.g11 + k * k * gs.g22 + l * l * gs.g33 +
         2.0 * (h * k * gs.g12 + h * l * gs.g13 + k * l * gs.g23);
}

// Bragg's law 2 d sin(theta) = lambda; returns 2-theta in degrees, or a
// negative value when lambda > 2d (the reflection cannot be reached).
XF_INLINE double bragg_two_theta_deg(double d_angstrom, double wavelength_angstrom) {
  const double s = wavelength_angstrom / (2.0 * d_angstrom);
  if (!(s <= 1.0)) return -1.0;
  return 2.0 * std::asin(s) * kDegPerRad;
}

}  // namespace xrdflow
