// Atomic scattering: X-ray form factors, Debye-Waller damping.
//
// Coefficients are never tabulated here: the Python layer takes the IT92
// Gaussian fits, Cromer-Liberman f', f'' and neutron coherent scattering
// lengths from gemmi and passes them in as arrays.
#pragma once
#include <cmath>

#include "common.hpp"

namespace xrdflow {

constexpr int kIT92Coefs = 9;  // a1..a4, b1..b4, c

// f0(s) = sum_i a_i exp(-b_i s^2) + c with s = sin(theta)/lambda in 1/angstrom
// (International Tables Vol. C, Table 6.1.1.4; Waasmaier-Kirfel-style IT92 fit).
XF_INLINE double it92_f0(const double* coef, double stol2) {
  return coef[0] * std::exp(-coef[4] * stol2) + coef[1] * std::exp(-coef[5] * stol2) +
         coef[2] * std::exp(-coef[6] * stol2) + coef[3] * std::exp(-coef[7] * stol2) + coef[8];
}

// Isotropic Debye-Waller factor exp(-B s^2), B in angstrom^2 (B = 8 pi^2 <u^2>;
// Willis & Pryor, Thermal Vibrations in Crystallography, 1975, eq. 3.47).
XF_INLINE double debye_waller(double b_iso, double stol2) { return std::exp(-b_iso * stol2); }

}  // namespace xrdflow
