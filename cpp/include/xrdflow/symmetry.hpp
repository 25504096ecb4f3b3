// Symmetry acting on reflections: equivalent hkl, canonical representatives,
// multiplicities and systematic absences.
//
// A space-group operation (R, t) maps fractional x to R x + t.  Then
// F(h) = exp(2 pi i h.t) F(R^T h), so |F| is constant on the orbit of h under
// {R^T} and, for powder intensities, also under -1 (Friedel pairs are
// superposed in a powder pattern).  A reflection with R^T h = h and
// exp(2 pi i h.t) != 1 has F(h) = 0: a systematic absence
// (International Tables for Crystallography Vol. A, sec. 1.6.5).
#pragma once
#include <cmath>

#include "common.hpp"

namespace xrdflow {

// Integer rotation part of an operation in fractional coordinates, row-major.
struct Rotation {
  int m[9];
};

// h' = R^T h: the action of a real-space rotation on Miller indices.
XF_INLINE Miller act_on_hkl(const Rotation& r, Miller h) {
  return Miller{r.m[0] * h.h + r.m[3] * h.k + r.m[6] * h.l, r.m[1] * h.h + r.m[4] * h.k + r.m[7] * h.l,
                r.m[2] * h.h + r.m[5] * h.k + r.m[8] * h.l};
}

// Is h the canonical (lexicographically largest) member of its orbit under the
// Laue group `laue` (n ops, identity included)?  On success *multiplicity is
// the orbit size |G| / |stabilizer of h|.
XF_INLINE bool canonical_in_orbit(Miller h, const Rotation* laue, int n, int* multiplicity) {
  int stabilizer = 0;
  for (int i = 0; i < n; ++i) {
    const Miller g = act_on_hkl(laue[i], h);
    if (lex_greater(g, h)) return false;
    if (g == h) ++stabilizer;
  }
  *multiplicity = n / stabilizer;
  return true;
}

// Systematic absence test over the full space group (n ops, translations in
// fractional units).  `tol` absorbs rounding in numerically detected
// translations (spglib gives them to ~1e-8 for clean structures).
XF_INLINE bool systematically_absent(Miller h, const Rotation* rot, const double* trans, int n, double tol) {
  for (int i = 0; i < n; ++i) {
    if (!(act_on_hkl(rot[i], h) == h)) continue;
    const double phase = h.h * trans[3 * i] + h.k * trans[3 * i + 1] + h.l * trans[3 * i + 2];
    const double frac = phase - std::floor(phase + 0.5);  // distance to nearest integer
    if (std::fabs(frac) > tol) return true;
  }
  return false;
}

}  // namespace xrdflow
