// exp and log in plain arithmetic: no libm call, so that loops over them
// vectorize, and no fused multiply-add, so that every build (and the AVX-512,
// AVX2 and baseline clones of cpp/src/dispatch.hpp) gives the same bits.
// Within 2 ulp of exp and 3 ulp of log on the stated ranges (checked against
// NumPy in tests/test_augment.py through _core.vecmath).
#pragma once
#include <cstdint>
#include <cstring>

#include "common.hpp"

namespace xrdflow {

namespace vecmath_detail {
constexpr double kLn2Hi = 6.93147180369123816490e-01;  // ln 2 in two parts (fdlibm): n kLn2Hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kInvLn2 = 1.44269504088896338700e+00;
constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer held in the low bits

XF_INLINE uint64_t bits_of(double x) {
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
XF_INLINE double double_of(uint64_t b) {
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}
}  // namespace vecmath_detail

// e^x for -700 <= x <= 700 (the caller keeps x in range: a clamp here stops
// GCC 12 from vectorizing loops over it).  e^x = 2^n e^r with n = round(x /
// ln 2), |r| <= ln2 / 2, and e^r by its Taylor series to r^14 (truncation
// below 1e-17).
XF_INLINE double exp_arith(double x) {
  using namespace vecmath_detail;
  const double t = x * kInvLn2 + kShifter;
  const double n = t - kShifter;
  const double r = (x - n * kLn2Hi) - n * kLn2Lo;
  // Horner, written out (a loop here would stop the vectorizer).
  const double p =
      ((((((((((((((1.0 / 87178291200.0) * r + 1.0 / 6227020800.0) * r + 1.0 / 479001600.0) * r +
                 1.0 / 39916800.0) * r + 1.0 / 3628800.0) * r + 1.0 / 362880.0) * r + 1.0 / 40320.0) * r +
              1.0 / 5040.0) * r + 1.0 / 720.0) * r + 1.0 / 120.0) * r + 1.0 / 24.0) * r + 1.0 / 6.0) * r + 0.5) *
           r + 1.0) * r + 1.0;
  // 2^n from the exponent bits; n = (bits of t) - (bits of kShifter) in two's complement.
  const uint64_t scale_bits = (bits_of(t) - bits_of(kShifter) + 1023u) << 52;
  return p * double_of(scale_bits);
}

// Natural log of a positive, finite, normal x.  x = 2^e m with m in
// [sqrt(1/2), sqrt(2)), found from the bits without a select (as in musl's
// log: offsetting the bits by those of sqrt(1/2) carries into the exponent
// exactly when m >= sqrt(2)); ln m = 2 atanh(s), s = (m - 1) / (m + 1),
// |s| <= 0.172, by its series to s^21 (truncation below 1e-17).
XF_INLINE double log_arith(double x) {
  using namespace vecmath_detail;
  constexpr uint64_t kOffset = 0x3FF0000000000000ull - 0x3FE6A09E667F3BCDull;  // 1.0 minus sqrt(1/2), in bits
  const uint64_t b = bits_of(x);
  const uint64_t biased_e = (b + kOffset) >> 52;               // e + 1023
  const double m = double_of(b - ((biased_e - 1023u) << 52));   // x / 2^e
  // e as a double without an int64 -> double conversion (none in AVX2): 2^52 + e + 1023, minus 2^52 + 1023.
  const double e = double_of(biased_e | 0x4330000000000000ull) - (4503599627370496.0 + 1023.0);
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  const double series =
      (((((((((((2.0 / 21.0) * s2 + 2.0 / 19.0) * s2 + 2.0 / 17.0) * s2 + 2.0 / 15.0) * s2 + 2.0 / 13.0) * s2 +
             2.0 / 11.0) * s2 + 2.0 / 9.0) * s2 + 2.0 / 7.0) * s2 + 2.0 / 5.0) * s2 + 2.0 / 3.0) * s2 + 2.0) * s;
  return e * kLn2Hi + (e * kLn2Lo + series);
}

// log_arith in single precision (for per-point noise): the same reduction
// with float bits, the series to s^9 (truncation below 1e-9, under float's
// rounding).
XF_INLINE float log_arith_f(float x) {
  constexpr uint32_t kOffset = 0x3F800000u - 0x3F3504F3u;  // 1.0f minus sqrt(1/2)f, in bits
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  const uint32_t biased_e = (b + kOffset) >> 23;  // e + 127
  const uint32_t m_bits = b - ((biased_e - 127u) << 23);
  float m;
  std::memcpy(&m, &m_bits, sizeof m);
  const float e = static_cast<float>(static_cast<int32_t>(biased_e) - 127);
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  const float series = ((((2.0f / 9.0f) * s2 + 2.0f / 7.0f) * s2 + 2.0f / 5.0f) * s2 + 2.0f / 3.0f) * s2 * s + 2.0f * s;
  return e * 0.693147182f + series;
}

}  // namespace xrdflow
