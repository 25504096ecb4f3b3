// Rendering peaks onto a sampled axis.
#pragma once
#include <cmath>

#include "common.hpp"
#include "profile.hpp"

namespace xrdflow {

// Sample points of a pattern, ascending.  Uniform grids (the usual 2-theta
// case) locate a peak window by arithmetic, others by bisection.
struct Grid {
  const double* x;
  int n;
  bool uniform;
  double start, inv_step;
};

// First index i in [0, n) with x[i] >= v (n if none).
XF_INLINE int lower_index(const Grid& g, double v) {
  int lo = 0, hi = g.n;
  if (g.uniform) {
    double guess = std::ceil((v - g.start) * g.inv_step);
    guess = guess < 0.0 ? 0.0 : (guess > g.n ? g.n : guess);
    int i = static_cast<int>(guess);
    // The arithmetic guess is exact up to rounding; step to the true index.
    while (i > 0 && g.x[i - 1] >= v) --i;
    while (i < g.n && g.x[i] < v) ++i;
    return i;
  }
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (g.x[mid] < v) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Far Lorentzian tails are smooth, so they are added as a piecewise-linear
// function whose nodes are spaced for an interpolation error below
// kTailTolerance of the peak height, written as second differences (O(1)
// work per linear piece) and integrated once per pattern by finish_tails().
// For x >> H the tail is ~A H^2 / (4 x^2) with L'' ~ 1.5 A H^2 / x^4, so a
// piece of width h starting at distance x errs by at most
// h^2 / 8 * 1.5 A H^2 / x^4, i.e. h <= x^2 sqrt(tol / 0.1875) / H.
constexpr double kTailTolerance = 1e-5;

// Second differences of the far tails (d2, length n + 2, all zero when
// unused) and the index range [lo, hi] they touch.
struct TailBuffer {
  double* d2;
  int lo, hi;
};

// Add v0 + slope (k - i) for k in [i, e) to the pattern encoded in t.
XF_INLINE void add_linear_piece(TailBuffer& t, int i, int e, double v0, double slope) {
  const double last = v0 + slope * (e - 1 - i);
  t.d2[i] += v0;
  t.d2[i + 1] += slope - v0;
  t.d2[e] -= last + slope;
  t.d2[e + 1] += last;
  if (i < t.lo) t.lo = i;
  if (e + 1 > t.hi) t.hi = e + 1;
}

// out[k] += the pattern encoded in t (two running sums over the touched
// range; each piece's terms cancel beyond its end), then clear t.
XF_INLINE void finish_tails(TailBuffer& t, int n, double* out) {
  double diff = 0.0, value = 0.0;
  for (int k = t.lo; k <= t.hi; ++k) {
    diff += t.d2[k];
    value += diff;
    if (k < n) out[k] += value;
    t.d2[k] = 0.0;
  }
  t.lo = n + 2;
  t.hi = -1;
}

// Lorentzian amp / (1 + inv_h2 dx^2) on grid points [lo, hi): exactly within
// `exact` of the centre, as linear pieces (into d2) beyond.
XF_INLINE void add_lorentzian(const Grid& g, double centre, double amp, double fwhm, double inv_h2, int lo, int hi,
                              double exact, double* __restrict__ out, TailBuffer* d2) {
  const double* __restrict__ grid = g.x;
  const int in_lo = d2 ? (lower_index(g, centre - exact) > lo ? lower_index(g, centre - exact) : lo) : lo;
  const int in_hi = d2 ? (lower_index(g, centre + exact) < hi ? lower_index(g, centre + exact) : hi) : hi;
  for (int i = in_lo; i < in_hi; ++i) {
    const double dx = grid[i] - centre;
    out[i] += amp / (1.0 + inv_h2 * dx * dx);
  }
  if (!d2) return;
  const double step = 1.0 / g.inv_step;
  const double spacing = std::sqrt(kTailTolerance / 0.1875) / (fwhm * step);  // points per x^2
  auto value_at = [&](int k) {  // exact value at grid index k (k may be n: extrapolated position)
    const double dx = g.start + k * step - centre;
    return amp / (1.0 + inv_h2 * dx * dx);
  };
  // Right tail, walking outwards: each piece is sized at its near end and
  // shares its end value with the next piece.
  double v0 = value_at(in_hi);
  for (int k = in_hi; k < hi;) {
    const double x = g.start + k * step - centre;
    int width = static_cast<int>(spacing * x * x);
    width = width < 1 ? 1 : width;
    const int e = k + width < hi ? k + width : hi;
    const double v1 = value_at(e);
    add_linear_piece(*d2, k, e, v0, (v1 - v0) / (e - k));
    v0 = v1;
    k = e;
  }
  // Left tail, walking outwards (downwards).
  double v1 = value_at(in_lo);
  for (int e = in_lo; e > lo;) {
    const double x = centre - (g.start + (e - 1) * step);
    int width = static_cast<int>(spacing * x * x);
    width = width < 1 ? 1 : width;
    const int k = e - width > lo ? e - width : lo;
    const double v_k = value_at(k);
    add_linear_piece(*d2, k, e, v_k, (v1 - v_k) / (e - k));
    v1 = v_k;
    e = k;
  }
}

// Add `area` times a unit-area pseudo-Voigt
//   pV(x) = eta 2/(pi H) / (1 + 4x^2/H^2) + (1 - eta) (2/H) sqrt(ln2/pi) exp(-4 ln2 x^2/H^2)
// (Thompson, Cox & Hastings 1987, eq. 1) centred at `centre` to out[], on
// the points of `grid` within each component's cutoff (profile_cutoffs).  The
// Gaussian is short and evaluated exactly; the Lorentzian exactly near the
// centre and, on uniform grids with a tail buffer d2 (else nullptr) and a
// tail longer than 32 points, as linear pieces in the far tail.  Profiles are point-sampled (as in Rietveld
// programs), so the step should be finer than the FWHM.
XF_INLINE void add_peak(const Grid& g, double centre, double area, double fwhm, double eta, const Cutoffs& cut,
                        double* __restrict__ out, TailBuffer* d2) {
  if (!(fwhm > 0.0)) return;
  const double* __restrict__ grid = g.x;
  const double inv_h2 = 4.0 / (fwhm * fwhm);
  if (cut.lorentz > 0.0) {
    const double amp = area * eta * 2.0 / (kPi * fwhm);
    const int lo = lower_index(g, centre - cut.lorentz), hi = lower_index(g, centre + cut.lorentz);
    // Exact out to where linear pieces would span two steps, and at least 2 FWHM.
    const double two_steps = std::sqrt(2.0 * fwhm / (g.inv_step * std::sqrt(kTailTolerance / 0.1875)));
    const double exact = two_steps > 2.0 * fwhm ? two_steps : 2.0 * fwhm;
    // A piece costs about as much as ten exact points: use pieces only where
    // a tail holds many more points than pieces (broad peaks, long tails).
    // Pieces per side ~ (H / c) (1 / exact - 1 / cutoff), c = sqrt(tol / 0.1875).
    const double c_tail = std::sqrt(kTailTolerance / 0.1875);
    const double tail_points = (cut.lorentz - exact) * g.inv_step;
    const double tail_pieces = fwhm / c_tail * (1.0 / exact - 1.0 / cut.lorentz);
    const bool pieces = g.uniform && d2 && tail_points > 10.0 * tail_pieces + 32.0;
    add_lorentzian(g, centre, amp, fwhm, inv_h2, lo, hi, exact, out, pieces ? d2 : nullptr);
  }
  if (cut.gauss > 0.0) {
    const double amp = area * (1.0 - eta) * 2.0 * std::sqrt(kLn2 / kPi) / fwhm;
    const double k = kLn2 * inv_h2;
    const int lo = lower_index(g, centre - cut.gauss), hi = lower_index(g, centre + cut.gauss);
    if (g.uniform && lo < hi) {
      // On a uniform grid exp(-k (x0 + j s)^2) follows from two products per
      // point: g_{j+1} = g_j r_j, r_{j+1} = r_j q with q = exp(-2 k s^2)
      // (three exp calls per peak instead of one per point; the window is a
      // few dozen points, so rounding stays at the 1e-14 level).
      const double step = 1.0 / g.inv_step;
      const double x0 = grid[lo] - centre;
      double value = amp * std::exp(-k * x0 * x0);
      double ratio = std::exp(-k * step * (2.0 * x0 + step));
      const double q = std::exp(-2.0 * k * step * step);
      for (int i = lo; i < hi; ++i) {
        out[i] += value;
        value *= ratio;
        ratio *= q;
      }
    } else {
      for (int i = lo; i < hi; ++i) {
        const double dx = grid[i] - centre;
        out[i] += amp * std::exp(-k * dx * dx);
      }
    }
  }
}

}  // namespace xrdflow
