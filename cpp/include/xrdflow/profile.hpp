// Peak intensities and shapes: Lorentz-polarization factor, Thompson-Cox-
// Hastings pseudo-Voigt widths, the profile function and its cutoff.
// All angles in degrees 2-theta unless a name says radians.
#pragma once
#include <cmath>

#include "common.hpp"

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
  if (neutron) return lorentz;
  const double c2t = 1.0 - 2.0 * sin_theta * sin_theta;
  return lorentz * (1.0 + c2t * c2t * cos2_2theta_m) / (1.0 + cos2_2theta_m);
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
  double hg2 = p.u * t * t + p.v * t + p.w;
  if (p.microstrain > 0.0) {
    const double hs = 4.0 * p.microstrain * t * kDegPerRad;
    hg2 += hs * hs;
  }
  const double hg = hg2 > 0.0 ? std::sqrt(hg2) : 0.0;
  double hl = p.x * t + p.y / c;
  if (p.size_angstrom > 0.0) hl += p.scherrer_k * wavelength_angstrom / (p.size_angstrom * c) * kDegPerRad;
  if (hl < 0.0) hl = 0.0;
  const double g2 = hg * hg, l2 = hl * hl;
  const double h5 = g2 * g2 * hg + 2.69269 * g2 * g2 * hl + 2.42843 * g2 * hg * l2 + 4.47163 * g2 * l2 * hl +
                    0.07842 * hg * l2 * l2 + l2 * l2 * hl;
  PeakShape s;
  s.fwhm_deg = std::pow(h5, 0.2);
  const double q = s.fwhm_deg > 0.0 ? hl / s.fwhm_deg : 0.0;
  double eta = 1.36603 * q - 0.47719 * q * q + 0.11116 * q * q * q;
  s.eta = eta < 0.0 ? 0.0 : (eta > 1.0 ? 1.0 : eta);
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
  const double g0 = 2.0 * std::sqrt(kLn2 / kPi) / fwhm;
  const double l0 = 2.0 / (kPi * fwhm);
  const double level = 0.5 * rel * (eta * l0 + (1.0 - eta) * g0);
  Cutoffs c{0.0, 0.0};
  if (eta > 0.0) {
    const double r = eta * l0 / level - 1.0;
    if (r > 0.0) c.lorentz = 0.5 * fwhm * std::sqrt(r);
  }
  const double gpeak = (1.0 - eta) * g0;
  if (gpeak > level) c.gauss = 0.5 * fwhm * std::sqrt(std::log(gpeak / level) / kLn2);
  return c;
}

// Half-width beyond which the whole profile stays below rel times its height.
XF_INLINE double profile_cutoff(double fwhm, double eta, double rel) {
  const Cutoffs c = profile_cutoffs(fwhm, eta, rel);
  return c.gauss > c.lorentz ? c.gauss : c.lorentz;
}

}  // namespace xrdflow
