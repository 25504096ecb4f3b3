// Structure factors of one reflection from the full unit-cell content.
//
// F(h) = sum_j occ_j f_j(s) exp(-B_j s^2) exp(2 pi i h.x_j)
// (Giacovazzo, Fundamentals of Crystallography, eq. 3.25).  With anomalous
// dispersion f_j = f0_j + f'_j + i f''_j, F(h) and F(-h) differ; a powder
// pattern superposes the Friedel pair, so we return their mean |F|^2:
// writing A = sum w (f0+f') cos, B = sum w (f0+f') sin, C = sum w f'' cos,
// D = sum w f'' sin, F(h) = (A-D) + i(B+C) and F(-h) = (A+D) + i(C-B), whence
// (|F(h)|^2 + |F(-h)|^2) / 2 = A^2 + B^2 + C^2 + D^2.
#pragma once
#include <cmath>

#include "common.hpp"
#include "scattering.hpp"

namespace xrdflow {

// Atoms of one structure.  `type` indexes the structure's local scatterer
// table; all arrays have n_atoms entries (frac has 3 per atom).
struct AtomsView {
  const double* frac;
  const int* type;
  const double* occupancy;
  const double* b_iso;
  int n_atoms;
};

// Scatterer table of one structure: n_types rows.
// X-ray: it92 (9 per type), fp/fpp (f', f'' in electrons, may be zero).
// Neutron: neutron_b (coherent scattering length, fm); it92/fp/fpp unused.
struct ScatterersView {
  const double* it92;
  const double* fp;
  const double* fpp;
  const double* neutron_b;
  int n_types;
  bool neutron;
};

// Fill f_real[t] and f_imag[t] for every type at s^2 = (sin(theta)/lambda)^2.
XF_INLINE void scattering_factors(const ScatterersView& sc, double stol2, double* f_real, double* f_imag) {
  for (int t = 0; t < sc.n_types; ++t) {
    if (sc.neutron) {
      f_real[t] = sc.neutron_b[t];
      f_imag[t] = 0.0;
    } else {
      f_real[t] = it92_f0(sc.it92 + kIT92Coefs * t, stol2) + sc.fp[t];
      f_imag[t] = sc.fpp[t];
    }
  }
}

// Friedel-averaged |F|^2 of reflection h (electrons^2 for X-rays, fm^2 for
// neutrons).  f_real/f_imag come from scattering_factors() at the same s^2.
XF_INLINE double structure_factor_f2(Miller h, double stol2, const AtomsView& atoms, const double* f_real,
                                     const double* f_imag) {
  double a = 0.0, b = 0.0, c = 0.0, d = 0.0;
  for (int j = 0; j < atoms.n_atoms; ++j) {
    const double* x = atoms.frac + 3 * j;
    // Reduce h.x modulo 1 before scaling by 2 pi to keep the argument small.
    double phase = h.h * x[0] + h.k * x[1] + h.l * x[2];
    phase -= std::floor(phase);
    const double arg = kTwoPi * phase;
    const double cs = std::cos(arg), sn = std::sin(arg);
    const double w = atoms.occupancy[j] * debye_waller(atoms.b_iso[j], stol2);
    const int t = atoms.type[j];
    const double fr = w * f_real[t], fi = w * f_imag[t];
    a += fr * cs;
    b += fr * sn;
    c += fi * cs;
    d += fi * sn;
  }
  return a * a + b * b + c * c + d * d;
}

}  // namespace xrdflow
