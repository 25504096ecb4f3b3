// Augmentation physics and randomness: a counter-based generator and the
// per-reflection and per-pattern effects of sample and instrument.
//
// Every random number of a sample comes from Philox4x32-10 keyed by the seed
// and counted by (sample index, epoch, draw number), so the same (seed,
// epoch, index) gives the same bytes on any thread count, batch split or
// device (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011).
#pragma once
#include <cmath>
#include <cstdint>

#include "common.hpp"
#include "lattice.hpp"

namespace xrdflow {

// ------------------------------------------------------------------ Philox

struct Philox4x32 {
  uint32_t v[4];
};

XF_INLINE void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds (Random123 constants).
XF_INLINE Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, ctr.v[0], &hi0, &lo0);
    mulhilo32(0xCD9E8D57u, ctr.v[2], &hi1, &lo1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

// The random stream of one sample: draw n is block n / 2 of Philox at
// counter (index_lo, index_hi, epoch, n / 2), half n % 2 of it.
struct SampleRng {
  uint32_t key0, key1;
  uint32_t c0, c1, c2;
  uint32_t block;
  int half;  // which 64-bit half of `cached` is next (2 = none left)
  Philox4x32 cached;
};

XF_INLINE SampleRng make_sample_rng(uint64_t seed, uint64_t epoch, uint64_t index) {
  SampleRng r;
  r.key0 = static_cast<uint32_t>(seed);
  r.key1 = static_cast<uint32_t>(seed >> 32);
  r.c0 = static_cast<uint32_t>(index);
  r.c1 = static_cast<uint32_t>(index >> 32);
  // Epochs beyond 2^32 wrap; the seed's upper bits still separate runs.
  r.c2 = static_cast<uint32_t>(epoch);
  r.block = 0;
  r.half = 2;
  r.cached = Philox4x32{{0, 0, 0, 0}};
  return r;
}

// Uniform double in (0, 1): 53 random bits, never exactly 0 or 1.
XF_INLINE double uniform(SampleRng& r) {
  if (r.half == 2) {
    r.cached = philox4x32_10(Philox4x32{{r.c0, r.c1, r.c2, r.block++}}, r.key0, r.key1);
    r.half = 0;
  }
  const uint64_t bits = (static_cast<uint64_t>(r.cached.v[2 * r.half]) << 32) | r.cached.v[2 * r.half + 1];
  ++r.half;
  return (static_cast<double>(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

XF_INLINE double uniform_in(SampleRng& r, double lo, double hi) { return lo + (hi - lo) * uniform(r); }

// Log-uniform in [lo, hi] (lo > 0): for scale-like quantities such as sizes and counts.
XF_INLINE double log_uniform_in(SampleRng& r, double lo, double hi) {
  return lo == hi ? lo : std::exp(uniform_in(r, std::log(lo), std::log(hi)));
}

XF_INLINE bool bernoulli(SampleRng& r, double p) { return p > 0.0 && uniform(r) < p; }

// Standard normal by Box-Muller (one of the pair; the other is discarded so
// that each draw consumes a fixed number of uniforms).
XF_INLINE double normal(SampleRng& r) {
  const double u1 = uniform(r), u2 = uniform(r);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

// Poisson deviate with mean lam >= 0: multiplication method below 10,
// otherwise the transformed rejection PTRS of Hormann, Insurance: Math. and
// Econ. 12, 39 (1993).
XF_INLINE double poisson(SampleRng& r, double lam) {
  if (!(lam > 0.0)) return 0.0;
  if (lam < 10.0) {
    const double limit = std::exp(-lam);
    double prod = uniform(r);
    double k = 0.0;
    while (prod > limit) {
      prod *= uniform(r);
      k += 1.0;
    }
    return k;
  }
  const double slam = std::sqrt(lam), loglam = std::log(lam);
  const double b = 0.931 + 2.53 * slam, a = -0.059 + 0.02483 * b;
  const double inv_alpha = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2.0);
  for (;;) {
    const double u = uniform(r) - 0.5, v = uniform(r);
    const double us = 0.5 - std::fabs(u);
    const double k = std::floor((2.0 * a / us + b) * u + lam + 0.43);
    if (us >= 0.07 && v <= vr) return k;
    if (k < 0.0 || (us < 0.013 && v > us)) continue;
    if (std::log(v) + std::log(inv_alpha) - std::log(a / (us * us) + b) <= -lam + k * loglam - std::lgamma(k + 1.0))
      return k;
  }
}

// ------------------------------------------------------------ the effects

// Strained lattice rows a_i' = a_i (I + e) for a symmetric strain e given as
// (e11, e22, e33, e23, e13, e12) in the Cartesian frame of the lattice rows.
XF_INLINE void strain_lattice(const double* lattice, const double* e, double* out) {
  const double m[9] = {1.0 + e[0], e[5], e[4], e[5], 1.0 + e[1], e[3], e[4], e[3], 1.0 + e[2]};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      out[3 * i + j] = lattice[3 * i] * m[j] + lattice[3 * i + 1] * m[3 + j] + lattice[3 * i + 2] * m[6 + j];
}

// March-Dollase factor for one orientation: (r^2 cos^2 a + sin^2 a / r)^(-3/2),
// a = angle between the scattering vector and the preferred direction
// (Dollase, J. Appl. Cryst. 19, 267 (1986), eq. 18).  r = 1: no texture.
XF_INLINE double march_dollase(double cos2_alpha, double r) {
  const double x = r * r * cos2_alpha + (1.0 - cos2_alpha) / r;
  return 1.0 / (x * std::sqrt(x));
}

// Sample displacement s (mm, towards the source is positive) on a goniometer
// of radius R (mm) moves peaks by -2 s cos(theta) / R radians
// (Klug & Alexander, X-ray Diffraction Procedures, 2nd ed., 1974, eq. 5-6).
XF_INLINE double displacement_shift_deg(double displacement_mm, double radius_mm, double cos_theta) {
  return -2.0 * displacement_mm * cos_theta / radius_mm * kDegPerRad;
}

}  // namespace xrdflow
