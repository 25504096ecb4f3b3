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

// Atom kinds: atoms with the same scatterer type, occupancy and B scatter
// identically, so their weight occ f exp(-B s^2) is computed once per reflection.
struct KindsView {
  const int* type;
  const double* occupancy;
  const double* b_iso;
  int n_kinds;
};

XF_INLINE void kind_weights(const KindsView& k, double stol2, const double* f_real, const double* f_imag,
                            double* w_real, double* w_imag) {
  for (int i = 0; i < k.n_kinds; ++i) {
    const double w = k.occupancy[i] * debye_waller(k.b_iso[i], stol2);
    w_real[i] = w * f_real[k.type[i]];
    w_imag[i] = w * f_imag[k.type[i]];
  }
}

// Phase factors exp(2 pi i n x_j) for n in [-n_max, n_max] along one axis,
// tabulated per atom: cos/sin at [j * (2 n_max + 1) + n + n_max], accurate to
// a few ulps, so exp(2 pi i h.x) = e_x(h) e_y(k) e_z(l) needs two complex
// products per atom instead of a cos and a sin.
struct PhaseAxis {
  const double* cos;
  const double* sin;
  int n_max;
};

struct PhaseTables {
  PhaseAxis axis[3];
};

// Friedel-averaged |F|^2 from per-atom phases (either tabulated or direct).
// A, B, C, D as in the header comment.
XF_INLINE double friedel_mean_f2(double a, double b, double c, double d) { return a * a + b * b + c * c + d * d; }

// |F|^2 of reflection h with phases from tables (the fast path).
XF_INLINE double structure_factor_f2_tabulated(Miller h, const PhaseTables& t, const int* kind, int n_atoms,
                                               const double* w_real, const double* w_imag) {
  const int hh[3] = {h.h, h.k, h.l};
  double a = 0.0, b = 0.0, c = 0.0, d = 0.0;
  for (int j = 0; j < n_atoms; ++j) {
    double re = 1.0, im = 0.0;
    for (int ax = 0; ax < 3; ++ax) {
      const PhaseAxis& p = t.axis[ax];
      const int idx = j * (2 * p.n_max + 1) + hh[ax] + p.n_max;
      const double cr = p.cos[idx], ci = p.sin[idx];
      const double r = re * cr - im * ci;
      im = re * ci + im * cr;
      re = r;
    }
    const double fr = w_real[kind[j]], fi = w_imag[kind[j]];
    a += fr * re;
    b += fr * im;
    c += fi * re;
    d += fi * im;
  }
  return friedel_mean_f2(a, b, c, d);
}

// |F|^2 of reflection h computing each phase directly (no tables; for very
// large cells where tables would not fit in cache or memory).
XF_INLINE double structure_factor_f2_direct(Miller h, const double* frac, const int* kind, int n_atoms,
                                            const double* w_real, const double* w_imag) {
  double a = 0.0, b = 0.0, c = 0.0, d = 0.0;
  for (int j = 0; j < n_atoms; ++j) {
    const double* x = frac + 3 * j;
    // Reduce h.x modulo 1 before scaling by 2 pi to keep the argument small.
    double phase = h.h * x[0] + h.k * x[1] + h.l * x[2];
    phase -= std::floor(phase);
    const double cs = std::cos(kTwoPi * phase), sn = std::sin(kTwoPi * phase);
    const double fr = w_real[kind[j]], fi = w_imag[kind[j]];
    a += fr * cs;
    b += fr * sn;
    c += fi * cs;
    d += fi * sn;
  }
  return friedel_mean_f2(a, b, c, d);
}

}  // namespace xrdflow
