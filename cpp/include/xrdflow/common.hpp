// Shared definitions for the header-only physics of xrdflow.
//
// Every physics function is marked XF_HD so that the CPU drivers (cpp/src) and
// CUDA kernels (cpp/cuda, when built) run the same arithmetic.  These functions
// never throw, allocate or call virtual functions: validation lives in the
// drivers, which report errors through xrdflow::fail() (cpp/src/fail.hpp).
#pragma once

#if defined(__CUDACC__)
#define XF_HD __host__ __device__
#else
#define XF_HD
#endif
#define XF_INLINE XF_HD inline

namespace xrdflow {

constexpr double kPi = 3.141592653589793238462643383279502884;
constexpr double kTwoPi = 2.0 * kPi;
constexpr double kDegPerRad = 180.0 / kPi;
constexpr double kRadPerDeg = kPi / 180.0;

// Miller indices of a reflection (reciprocal-lattice coordinates).
struct Miller {
  int h, k, l;
};

XF_INLINE bool operator==(Miller a, Miller b) { return a.h == b.h && a.k == b.k && a.l == b.l; }

// Lexicographic order on (h, k, l); the canonical member of a symmetry orbit
// is its largest element in this order.
XF_INLINE bool lex_greater(Miller a, Miller b) {
  if (a.h != b.h) return a.h > b.h;
  if (a.k != b.k) return a.k > b.k;
  return a.l > b.l;
}

// Fractional (crystal) coordinates of an atom, as opposed to Cartesian ones.
struct Fractional {
  double x, y, z;
};

}  // namespace xrdflow
