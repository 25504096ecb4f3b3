// Peak intensities and shapes: Lorentz-polarization factor, Thompson-Cox-
// Hastings pseudo-Voigt widths, the profile function and its cutoff.
// All angles in degrees 2-theta unless a name says radians.
#pragma once
#include <cmath>

#include "common.hpp"
#include "vecmath.hpp"

namespace xrdflow {

// Lorentz-polarization factor for a powder diffractometer with an optional
// monochromator at 2-theta_m (Pecharsky & Zavalij, Fundamentals of Powder
// Diffraction, 2nd ed., eq. 8.46):
//   LP = (1 + cos^2 2theta cos^2 2theta_m) / (sin^2 theta cos theta (1 + cos^2 2theta_m)).
// Neutrons are unpolarized: LP = 1 / (sin^2 theta cos theta).
// From sin(theta) and cos(theta), which the renderer has without any trig call
// (sin theta = lambda / 2d); cos 2theta = 1 - 2 sin^2 theta.
XF_INLINE double lorentz_polarization_sc(double sin_theta, double cos_theta, double cos2_2theta_m, bool neutron) {
  const double lorentz = 1.0 / (sin_theta * sin_theta * cos_theta);
  const double c2t = 1.0 - 2.0 * sin_theta * sin_theta;
  const double polarization = (1.0 + c2t * c2t * cos2_2theta_m) / (1.0 + cos2_2theta_m);
  // Exactly lorentz * polarization for X-rays (pol - 1 is exact for pol in [0.5, 2]) and lorentz for
  // neutrons, without a select on the flag (GCC 12 would not vectorize loops over peaks with one).
  const double polarized = neutron ? 0.0 : 1.0;
  return lorentz * (1.0 + polarized * (polarization - 1.0));
}

XF_INLINE double lorentz_polarization(double two_theta_deg, double cos2_2theta_m, bool neutron) {
  const double theta = 0.5 * two_theta_deg * kRadPerDeg;
  return lorentz_polarization_sc(std::sin(theta), std::cos(theta), cos2_2theta_m, neutron);
}

// Instrument and sample broadening.  Caglioti U, V, W (deg^2) give the
// Gaussian FWHM, X, Y (deg) the Lorentzian FWHM, as in FullProf's TCH
// profile (npr = 7).  Crystallite size and microstrain are physical
// alternatives that add to them.
struct ProfileParams {
  double u, v, w;            // H_G^2 = U tan^2 theta + V tan theta + W   [deg^2]
  double x, y;               // H_L = X tan theta + Y / cos theta         [deg]
  double size_angstrom;      // Scherrer crystallite size L (<= 0: none)
  double scherrer_k;         // Scherrer shape constant K (0.9 for FWHM of near-spherical crystallites)
  double microstrain;        // apparent strain epsilon = delta d / d (0: none)
};

struct PeakShape {
  double fwhm_deg;  // total FWHM H in degrees 2-theta
  double eta;       // Lorentzian fraction of the pseudo-Voigt, in [0, 1]
};

// TCH pseudo-Voigt width and mixing from t = tan(theta), c = cos(theta) (Thompson, Cox & Hastings 1987,
// J. Appl. Cryst. 20, 79, eqs. 2-4).  Scherrer: H_size = K lambda / (L cos theta)
// (Lorentzian); Stokes-Wilson strain: H_strain = 4 epsilon tan theta (Gaussian,
// in quadrature); both converted from radians to degrees.
XF_INLINE PeakShape tch_shape_tc(double t, double c, double wavelength_angstrom, const ProfileParams& p) {
  // Branch-free (no strain or size adds exactly zero; every select's condition used once, which is
  // what GCC 12 needs to vectorize loops over peaks).
  const double strain = p.microstrain > 0.0 ? p.microstrain : 0.0;
  const double hs = 4.0 * strain * t * kDegPerRad;
  const double hg2 = p.u * t * t + p.v * t + p.w + hs * hs;
  const double hg = std::sqrt(hg2 > 0.0 ? hg2 : 0.0);
  const double size_inv = p.size_angstrom > 0.0 ? 1.0 / p.size_angstrom : 0.0;
  double hl = p.x * t + p.y / c + p.scherrer_k * wavelength_angstrom * size_inv / c * kDegPerRad;
  hl = hl > 0.0 ? hl : 0.0;
  const double g2 = hg * hg, l2 = hl * hl;
  const double h5 = g2 * g2 * hg + 2.69269 * g2 * g2 * hl + 2.42843 * g2 * hg * l2 + 4.47163 * g2 * l2 * hl +
                    0.07842 * hg * l2 * l2 + l2 * l2 * hl;
  PeakShape s;
  // H = h5^(1/5) through exp_arith / log_arith (vecmath.hpp); + 1e-300 keeps the log's argument
  // normal and leaves any h5 above 1e-284 unchanged.
  const double root = exp_arith(0.2 * log_arith(h5 + 1e-300));
  s.fwhm_deg = h5 > 0.0 ? root : 0.0;
  const double q = hl / (s.fwhm_deg + 1e-300);  // 0 when both widths are 0
  // eta(q) rises from 0 at q = 0 to 1 at q = 1 (H >= H_L); the clamp catches rounding.
  const double eta = 1.36603 * q - 0.47719 * q * q + 0.11116 * q * q * q;
  s.eta = eta < 1.0 ? eta : 1.0;
  return s;
}

XF_INLINE PeakShape tch_shape(double two_theta_deg, double wavelength_angstrom, const ProfileParams& p) {
  const double theta = 0.5 * two_theta_deg * kRadPerDeg;
  return tch_shape_tc(std::tan(theta), std::cos(theta), wavelength_angstrom, p);
}

constexpr double kLn2 = 0.69314718055994530942;

// Where each component of the pseudo-Voigt may be cut.  Each component is
// cut where it alone falls to rel/2 of the total peak height, so their sum
// beyond both cutoffs stays below rel times the peak height (an exact bound,
// no fitting).  A pure Lorentzian with rel = 1e-3 is cut at 22.4 FWHM, a pure
// Gaussian at 1.65 FWHM.
struct Cutoffs {
  double gauss;    // half-width of the Gaussian window (0: no Gaussian part)
  double lorentz;  // half-width of the Lorentzian window (0: no Lorentzian part)
};

XF_INLINE Cutoffs profile_cutoffs(double fwhm, double eta, double rel) {
  // Branch-free, so that loops over peaks vectorize; + 1e-300 keeps a zero width finite and leaves
  // any width above 1e-284 unchanged.
  const double h = fwhm + 1e-300;
  const double g0 = 2.0 * std::sqrt(kLn2 / kPi) / h;
  const double l0 = 2.0 / (kPi * h);
  const double level = 0.5 * rel * (eta * l0 + (1.0 - eta) * g0);
  Cutoffs c;
  // Lorentzian part eta l0 / (1 + 4x^2/H^2) = level at x = H/2 sqrt(eta l0 / level - 1); none if <= 0.
  const double r = eta * l0 / level - 1.0;
  c.lorentz = 0.5 * h * std::sqrt(r > 0.0 ? r : 0.0);
  // Gaussian part (1 - eta) g0 exp(-4 ln2 x^2 / H^2) = level; none (log 1 = 0) if it starts below.
  const double ratio = (1.0 - eta) * g0 / level;
  c.gauss = 0.5 * h * std::sqrt(log_arith(ratio > 1.0 ? ratio : 1.0) / kLn2);
  return c;
}

// Half-width beyond which the whole profile stays below rel times its height.
XF_INLINE double profile_cutoff(double fwhm, double eta, double rel) {
  const Cutoffs c = profile_cutoffs(fwhm, eta, rel);
  return c.gauss > c.lorentz ? c.gauss : c.lorentz;
}

}  // namespace xrdflow
