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
#include "lattice.hpp"

namespace xrdflow {

// Integer rotation part of an operation in fractional coordinates, row-major.
struct Rotation {
  int m[9];
};

// A unique 64-bit key for a rotation whose entries lie in [-64, 64]
// (129^9 < 2^64), for fast set membership of operations.
XF_INLINE unsigned long long rotation_key(const Rotation& r) {
  unsigned long long key = 0;
  for (int i = 0; i < 9; ++i) key = key * 129ull + static_cast<unsigned long long>(r.m[i] + 64);
  return key;
}

XF_INLINE Rotation multiply(const Rotation& a, const Rotation& b) {
  Rotation c;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) c.m[3 * i + j] = a.m[3 * i] * b.m[j] + a.m[3 * i + 1] * b.m[3 + j] + a.m[3 * i + 2] * b.m[6 + j];
  return c;
}

XF_INLINE int determinant(const Rotation& r) {
  const int* m = r.m;
  return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
}

// Entries within [-64, 64]: the range rotation_key() encodes.
XF_INLINE bool small_entries(const Rotation& r) {
  for (int i = 0; i < 9; ++i)
    if (r.m[i] < -64 || r.m[i] > 64) return false;
  return true;
}

// h' = R^T h: the action of a real-space rotation on Miller indices.
XF_INLINE Miller act_on_hkl(const Rotation& r, Miller h) {
  return Miller{r.m[0] * h.h + r.m[3] * h.k + r.m[6] * h.l, r.m[1] * h.h + r.m[4] * h.k + r.m[7] * h.l,
                r.m[2] * h.h + r.m[5] * h.k + r.m[8] * h.l};
}

// Average of the reciprocal metric over the Laue group, G*_s = (1/n) sum_R R G* R^T.
// 1/d^2(R^T h) = h^T R G* R^T h, so under G*_s every member of an orbit has
// exactly the same d.  For a lattice that is only symmetric within the
// detection tolerance (relaxed or rounded input) this removes spread in d
// inside an orbit; for an exactly symmetric lattice it changes nothing.
XF_INLINE Metric symmetrized_metric(const Metric& gs, const Rotation* laue, int n) {
  const double g[9] = {gs.g11, gs.g12, gs.g13, gs.g12, gs.g22, gs.g23, gs.g13, gs.g23, gs.g33};
  double acc[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int r = 0; r < n; ++r) {
    const int* m = laue[r].m;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        double sum = 0.0;  // (R G R^T)_ij = sum_kl R_ik G_kl R_jl
        for (int k = 0; k < 3; ++k)
          for (int l = 0; l < 3; ++l) sum += m[3 * i + k] * g[3 * k + l] * m[3 * j + l];
        acc[3 * i + j] += sum;
      }
  }
  const double inv = 1.0 / n;
  return Metric{acc[0] * inv, acc[4] * inv, acc[8] * inv, acc[1] * inv, acc[2] * inv, acc[5] * inv};
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
