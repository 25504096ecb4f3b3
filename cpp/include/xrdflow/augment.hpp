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
#include <cstring>

#include "common.hpp"
#include "lattice.hpp"
#include "vecmath.hpp"

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

// The random stream of one sample: Philox blocks at counter (index_lo,
// index_hi, epoch, n) for n = 0, 1, 2, ..., consumed word by word.
struct SampleRng {
  uint32_t key0, key1;
  uint32_t c0, c1, c2;
  uint32_t block;
  int word;  // next unused word of `cached` (4 = none left)
  Philox4x32 cached;
};

XF_INLINE SampleRng make_sample_rng(uint64_t seed, uint64_t epoch, uint64_t index) {
  SampleRng r;
  r.key0 = static_cast<uint32_t>(seed);
  r.key1 = static_cast<uint32_t>(seed >> 32);
  r.c0 = static_cast<uint32_t>(index);
  r.c1 = static_cast<uint32_t>(index >> 32);
  // The Python layer keeps epochs below 2^32.
  r.c2 = static_cast<uint32_t>(epoch);
  r.block = 0;
  r.word = 4;
  r.cached = Philox4x32{{0, 0, 0, 0}};
  return r;
}

XF_INLINE uint32_t next_word(SampleRng& r) {
  if (r.word == 4) {
    r.cached = philox4x32_10(Philox4x32{{r.c0, r.c1, r.c2, r.block++}}, r.key0, r.key1);
    r.word = 0;
  }
  return r.cached.v[r.word++];
}

// Uniform double in (0, 1) from 53 random bits (two words), never 0 or 1.
XF_INLINE double uniform(SampleRng& r) {
  const uint64_t hi = next_word(r), lo = next_word(r);
  return (static_cast<double>(((hi << 32) | lo) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Uniform in (0, 1) from one 32-bit word: for per-point noise, where 2^-32
// resolution is ample and one Philox block then serves four draws.
XF_INLINE double word_to_uniform(uint32_t w) { return (static_cast<double>(w) + 0.5) * (1.0 / 4294967296.0); }
XF_INLINE double uniform32(SampleRng& r) { return word_to_uniform(next_word(r)); }

XF_INLINE double uniform_in(SampleRng& r, double lo, double hi) { return lo + (hi - lo) * uniform(r); }

// Log-uniform in [lo, hi] (lo > 0): for scale-like quantities such as sizes and counts.
XF_INLINE double log_uniform_in(SampleRng& r, double lo, double hi) {
  return lo == hi ? lo : std::exp(uniform_in(r, std::log(lo), std::log(hi)));
}

XF_INLINE bool bernoulli(SampleRng& r, double p) { return p > 0.0 && uniform(r) < p; }

// Inverse of the standard normal CDF, relative error < 1.2e-9 (P. J. Acklam's
// rational approximation, 2003): rational in the central 95 %, sqrt(-2 ln q)
// only in the tails, so one uniform gives one normal deviate cheaply.
constexpr double kNormalTail = 0.02425;  // below p (or above 1 - p) the tail formula applies

// The central formula, for kNormalTail <= p <= 1 - kNormalTail (branch-free, so loops over it vectorize).
XF_INLINE double inverse_normal_central(double p) {
  const double q = p - 0.5, t = q * q;
  return (((((-3.969683028665376e+01 * t + 2.209460984245205e+02) * t - 2.759285104469687e+02) * t +
            1.383577518672690e+02) * t - 3.066479806614716e+01) * t + 2.506628277459239e+00) * q /
         (((((-5.447609879822406e+01 * t + 1.615858368580409e+02) * t - 1.556989798598866e+02) * t +
            6.680131188771972e+01) * t - 1.328068155288572e+01) * t + 1.0);
}

// The tail formula, for p < kNormalTail or p > 1 - kNormalTail: the tail
// rational of q = sqrt(-2 ln p) (lower tail: negative).
XF_INLINE double inverse_normal_tail_rational(double q) {
  return (((((-7.784894002430293e-03 * q + -3.223964580411365e-01) * q + -2.400758277161838e+00) * q +
            -2.549732539343734e+00) * q + 4.374664141464968e+00) * q + 2.938163982698783e+00) /
         ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q + 2.445134137142996e+00) * q +
           3.754408661907416e+00) * q + 1.0);
}

XF_INLINE double inverse_normal_tail(double p) {
  const double x = inverse_normal_tail_rational(std::sqrt(-2.0 * std::log(p < kNormalTail ? p : 1.0 - p)));
  return p < kNormalTail ? x : -x;
}

XF_INLINE double inverse_normal_cdf(double p) {
  return (p < kNormalTail || p > 1.0 - kNormalTail) ? inverse_normal_tail(p) : inverse_normal_central(p);
}

XF_INLINE double normal(SampleRng& r) { return inverse_normal_cdf(uniform32(r)); }

// Counts recorded for a mean of lam >= 0 photons with Gaussian read noise of
// standard deviation sigma >= 0: Poisson(lam) + N(0, sigma^2).
// Below kPoissonExactBelow the Poisson part is exact (inversion by
// sequential search).  Above, the sum is drawn from one normal deviate z by
// the Cornish-Fisher expansion (Cornish & Fisher, Rev. Inst. Int. Stat. 5,
// 307 (1937)) with its cumulants k1 = lam, k2 = lam + sigma^2, k3 = k4 = lam:
//   x = lam + s [z + (z^2 - 1) g1/6 + (z^3 - 3z) g2/24 - (2z^3 - 5z) g1^2/36],
//   s = sqrt(k2), g1 = lam / s^3, g2 = lam / s^4,
// so mean, variance, skewness and kurtosis match to O(1/lam); without read
// noise the result is rounded to whole counts.
constexpr double kPoissonExactBelow = 20.0;
// Search steps of the exact branch: P(X > 200) for a mean below 20 is < 1e-100.
constexpr int kPoissonMaxSteps = 200;

// e^-x for 0 <= x <= 700 (vecmath.hpp: no libm call, so loops over it vectorize).
XF_INLINE double exp_neg(double x) { return exp_arith(-x); }

// Poisson(lam) by inversion (sequential search) of the uniform u in (0, 1):
// the smallest k with u <= P(X <= k).  poisson_lanes (augment.cpp) runs the
// same steps on several points at once and gives the same values.
XF_INLINE double poisson_inverse(double lam, double u) {
  double term = exp_neg(lam), cdf = term;
  int k = 0;
  while (u > cdf && k < kPoissonMaxSteps) {
    ++k;
    term *= lam * (1.0 / k);
    cdf += term;
  }
  return static_cast<double>(k);
}

XF_INLINE double poisson_exact(SampleRng& r, double lam) { return poisson_inverse(lam, uniform32(r)); }

// The Cornish-Fisher value for the normal deviate z, before any rounding
// (branch-free, so loops over it vectorize); read2 = sigma^2.
// (In double or float: cornish_fisher_f below is the per-point pattern version.)
template <typename T>
XF_INLINE T cornish_fisher_value(T lam, T read2, T z) {
  // s g1 = lam / var, s g2 = lam s / var^2, s g1^2 = lam^2 s / var^3: one division and one
  // square root per value, the constant divisors as products.
  const T z2 = z * z;
  const T var = lam + read2, s = std::sqrt(var), r = T(1) / var;
  const T a = lam * r, b = a * r * s, c = a * b;
  return lam + s * z + a * T(1.0 / 6.0) * (z2 - T(1)) + b * T(1.0 / 24.0) * (z2 - T(3)) * z -
         c * T(1.0 / 36.0) * (T(2) * z2 - T(5)) * z;
}

XF_INLINE double cornish_fisher(double lam, double read2, double z) { return cornish_fisher_value(lam, read2, z); }

// Single precision for the per-point noise of whole patterns (augment.cpp):
// patterns are float32, 24 bits are ample for noise, and a vector register
// holds twice as many floats as doubles.

// Uniform in (0, 1) from the top 23 bits of a word: (2 (w >> 9) + 1) 2^-24, exact in a float.
XF_INLINE float word_to_uniform_f(uint32_t w) {
  return static_cast<float>(static_cast<int32_t>((w >> 9) * 2u + 1u)) * (1.0f / 16777216.0f);
}

// The standard normal deviate of p in (0, 1) in single precision,
// sqrt(2) erfinv(2p - 1) by M. Giles' single-precision erfinv ("Approximating
// the erfinv function", GPU Computing Gems Jade Edition, 2011, ch. 10):
// w = -ln(1 - x^2), a polynomial in w - 2.5 for w < 5 and in sqrt(w) - 3
// beyond, both evaluated and one kept (branch-free, so that loops over it
// vectorize; no division but the log's).  For the p of word_to_uniform_f,
// 1 - p and 2p - 1 are exact and 1 - x^2 = 4p(1 - p) is one rounding; within
// 1.3e-6 of inverse_normal_cdf over every such p (tests/test_augment.py).
// Its parts: w, the central polynomial (w < kGilesTail) and the tail one (w >= kGilesTail), each
// without the factor sqrt(2) x; whole patterns take the central one for every point and redo the
// few tail points (p < 0.0034 or p > 0.9966), the same values (normal_deviates_f, augment.cpp).
constexpr float kGilesTail = 5.0f;

XF_INLINE float giles_w(float p) { return -log_arith_f(4.0f * p * (1.0f - p)); }

XF_INLINE float giles_central(float w) {
  const float a = w - 2.5f;
  float c = 2.81022636e-08f;
  c = 3.43273939e-07f + c * a;
  c = -3.5233877e-06f + c * a;
  c = -4.39150654e-06f + c * a;
  c = 0.00021858087f + c * a;
  c = -0.00125372503f + c * a;
  c = -0.00417768164f + c * a;
  c = 0.246640727f + c * a;
  c = 1.50140941f + c * a;
  return c;
}

XF_INLINE float giles_tail(float w) {
  const float b = std::sqrt(w) - 3.0f;
  float t = -0.000200214257f;
  t = 0.000100950558f + t * b;
  t = 0.00134934322f + t * b;
  t = -0.00367342844f + t * b;
  t = 0.00573950773f + t * b;
  t = -0.0076224613f + t * b;
  t = 0.00943887047f + t * b;
  t = 1.00167406f + t * b;
  t = 2.83297682f + t * b;
  return t;
}

// The deviate from either polynomial's value at p: sqrt(2) poly x, x = 2p - 1.
XF_INLINE float giles_deviate(float poly, float p) { return 1.41421356f * poly * (2.0f * p - 1.0f); }

XF_INLINE float inverse_normal_f(float p) {
  const float w = giles_w(p);
  return giles_deviate(w < kGilesTail ? giles_central(w) : giles_tail(w), p);
}

// cornish_fisher in single precision; without read noise (round = true) the
// value is rounded to whole counts (>= 0; above 2^23 every float is whole).
XF_INLINE float cornish_fisher_f(float lam, float read2, float z, bool round) {
  float x = cornish_fisher_value(lam, read2, z);
  if (round) {
    // Round [0, 2^23] half up through int32, and add back what lies above 2^23 (whole already);
    // no select on the result, so that loops over it vectorize.
    float clamped = x < 8388608.0f ? x : 8388608.0f;
    clamped = clamped > 0.0f ? clamped : 0.0f;
    const float whole = static_cast<float>(static_cast<int32_t>(clamped + 0.5f));  // 2^23 + 0.5 rounds to 2^23
    const float above = x - 8388608.0f;
    x = whole + (above > 0.0f ? above : 0.0f);
  }
  return x;
}

// Whole counts of a Cornish-Fisher value without read noise.
XF_INLINE double round_counts(double x) {
  const double rounded = x + 0.5;
  return rounded > 0.0 ? static_cast<double>(static_cast<int64_t>(rounded)) : 0.0;  // no libm call
}

// The Cornish-Fisher branch (lam >= kPoissonExactBelow) from its normal deviate z.
XF_INLINE double counting_noise_cf(double lam, double sigma, double z) {
  const double x = cornish_fisher(lam, sigma * sigma, z);
  return sigma > 0.0 ? x : round_counts(x);
}

XF_INLINE double counting_noise(SampleRng& r, double lam, double sigma) {
  if (!(lam > 0.0)) return sigma > 0.0 ? sigma * normal(r) : 0.0;
  if (lam < kPoissonExactBelow) return poisson_exact(r, lam) + (sigma > 0.0 ? sigma * normal(r) : 0.0);
  return counting_noise_cf(lam, sigma, normal(r));
}

// Per-point noise of a whole pattern draws from two streams of its own, so
// that every point's draws sit at a fixed place and whole patterns are drawn
// in vectorizable passes: point i takes word i % 4 of Philox block
// kNoiseStream + i / 4 (its Poisson uniform or normal deviate) and, only for
// means below kPoissonExactBelow with read noise, the same word of block
// kReadNoiseStream + i / 4 (the read-noise deviate).  The sequential stream
// of a sample (next_word) counts blocks up from 0 and never reaches these.
constexpr uint32_t kNoiseStream = 0x80000000u;
constexpr uint32_t kReadNoiseStream = 0xC0000000u;

XF_INLINE Philox4x32 stream_block(const SampleRng& r, uint32_t block) {
  return philox4x32_10(Philox4x32{{r.c0, r.c1, r.c2, block}}, r.key0, r.key1);
}

XF_INLINE double poisson(SampleRng& r, double lam) { return counting_noise(r, lam, 0.0); }

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
