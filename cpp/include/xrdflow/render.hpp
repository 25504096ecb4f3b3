// Rendering peaks onto a sampled axis.
#pragma once
#include <cmath>
#include <cstring>

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
// h^2 / 8 * 1.5 A H^2 / x^4, i.e. h <= x^2 std::sqrt(tol / 0.1875) / H.
constexpr double kTailTolerance = 1e-5;

// Pieces start where they would span this many grid steps: closer in, exact
// points are cheaper.  A piece costs ~35 cycles per line (two divisions and
// four scattered updates); an exact point, in float32 lanes with the two
// lines of a doublet sharing its division, well under one cycle with AVX-512
// and about one with AVX2.  Measured with the realistic augmentation
// (MP-20, 4096 points, best of 20 sim.render calls of 256 patterns, 1 thread):
// with double exact points on an AVX2 machine 2 steps gave 7,400 patterns/s,
// 16 steps 7,950, 32 steps 8,100; with float exact points on an AVX-512 one
// 32 steps ~16,000, 48 ~16,600, 64 ~16,900, 128 ~16,900 and no pieces at
// all ~16,900.  64 keeps pieces for the longest tails (small cutoff_rel,
// AVX2 machines, where exact points cost twice as much).
constexpr double kPieceStepsMin = 64.0;

// Scratch of one render: second differences of the far tails (d2, length
// n + 2, all zero when unused) and the index range [lo, hi] they touch; and,
// optionally, a float accumulator of the exact Lorentzian parts (lorentz,
// length n, all zero when unused; nullptr: they go straight into the double
// pattern) and the range [lorentz_lo, lorentz_hi) it touches.
struct TailBuffer {
  double* d2;
  int lo, hi;
  float* lorentz = nullptr;
  int lorentz_lo = 0, lorentz_hi = 0;
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
// range; each piece's terms cancel beyond its end) and the float
// accumulator's values, then clear t.
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
  if (t.lorentz != nullptr) {
    float* __restrict__ y = t.lorentz;
    for (int k = t.lorentz_lo; k < t.lorentz_hi; ++k) {
      out[k] += static_cast<double>(y[k]);
      y[k] = 0.0f;
    }
    t.lorentz_lo = n;
    t.lorentz_hi = 0;
  }
}

// The Lorentzian component of one peak, amp / (1 + inv_h2 dx^2): its window
// [lo, hi) of grid points, and the part [in_lo, in_hi) evaluated exactly
// (the whole window unless the far tails go in as linear pieces).
struct LorentzPart {
  double centre, amp, fwhm, inv_h2;
  int lo, hi, in_lo, in_hi;
  bool pieces;
};

// The Lorentzian part of a pseudo-Voigt of `area`; amp = 0 (empty window) when it has none.
XF_INLINE LorentzPart lorentz_part(const Grid& g, double centre, double area, double fwhm, double eta,
                                   const Cutoffs& cut, bool have_tail_buffer) {
  LorentzPart p{centre, 0.0, fwhm, 4.0 / (fwhm * fwhm), 0, 0, 0, 0, false};
  if (!(cut.lorentz > 0.0)) return p;
  p.amp = area * eta * 2.0 / (kPi * fwhm);
  p.lo = lower_index(g, centre - cut.lorentz);
  p.hi = lower_index(g, centre + cut.lorentz);
  // Exact out to where linear pieces would span kPieceStepsMin steps (x^2 c / (H step) = W), and
  // at least 2 FWHM.
  const double c_tail = std::sqrt(kTailTolerance / 0.1875);
  const double wide = std::sqrt(kPieceStepsMin * fwhm / (g.inv_step * c_tail));
  const double exact = wide > 2.0 * fwhm ? wide : 2.0 * fwhm;
  // A piece costs about as much as ten exact points: use pieces only where
  // a tail holds many more points than pieces (broad peaks, long tails).
  // Pieces per side ~ (H / c) (1 / exact - 1 / cutoff), c = sqrt(tol / 0.1875).
  const double tail_points = (cut.lorentz - exact) * g.inv_step;
  const double tail_pieces = fwhm / c_tail * (1.0 / exact - 1.0 / cut.lorentz);
  p.pieces = g.uniform && have_tail_buffer && tail_points > 10.0 * tail_pieces + 32.0;
  p.in_lo = p.lo;
  p.in_hi = p.hi;
  if (p.pieces) {
    const int a = lower_index(g, centre - exact), b = lower_index(g, centre + exact);
    p.in_lo = a > p.lo ? a : p.lo;
    p.in_hi = b < p.hi ? b : p.hi;
  }
  return p;
}

// The exact Lorentzian on grid points [from, to).
XF_INLINE void lorentz_exact_double(const Grid& g, const LorentzPart& p, int from, int to, double* __restrict__ out) {
  const double* __restrict__ grid = g.x;
  const double centre = p.centre, amp = p.amp, k = p.inv_h2;
  for (int i = from; i < to; ++i) {
    const double dx = grid[i] - centre;
    out[i] += amp / (1.0 + k * dx * dx);
  }
}

// Two exact Lorentzians (the two lines of a doublet) on grid points [from, to)
// with one division per point: a/u + b/v = (a v + b u) / (u v).
XF_INLINE void lorentz_exact_pair_double(const Grid& g, const LorentzPart& p, const LorentzPart& q, int from, int to,
                                         double* __restrict__ out) {
  const double* __restrict__ grid = g.x;
  const double cp = p.centre, ap = p.amp, kp = p.inv_h2, cq = q.centre, aq = q.amp, kq = q.inv_h2;
  for (int i = from; i < to; ++i) {
    const double dp = grid[i] - cp, dq = grid[i] - cq;
    const double u = 1.0 + kp * dp * dp, v = 1.0 + kq * dq * dq;
    out[i] += (ap * v + aq * u) / (u * v);
  }
}

// The same in single precision on a uniform grid, into the float accumulator
// (twice the lanes per vector and a cheaper division: the exact Lorentzian
// points are the largest single loop of an augmented render).  The distance to the
// centre is (i - ic) step + (x_ic - centre) with ic the grid index nearest
// the centre: an exact small integer times the step plus an offset below
// half a step, so it keeps float's relative precision down to the centre
// (x_i - centre in float would lose it to cancellation); values within a few
// 1e-7 of the double formula.
struct LorentzF {
  int ic;
  float offset, amp, k;
};

XF_INLINE LorentzF lorentz_f(const Grid& g, const LorentzPart& p) {
  double guess = std::floor((p.centre - g.start) * g.inv_step + 0.5);
  guess = guess < -1e6 ? -1e6 : (guess > 1e6 + g.n ? 1e6 + g.n : guess);  // windows stay on the grid anyway
  const int ic = static_cast<int>(guess);
  const double x_ic = g.start + ic / g.inv_step;
  return LorentzF{ic, static_cast<float>(x_ic - p.centre), static_cast<float>(p.amp), static_cast<float>(p.inv_h2)};
}

XF_INLINE void track(TailBuffer& t, int from, int to) {
  if (from < t.lorentz_lo) t.lorentz_lo = from;
  if (to > t.lorentz_hi) t.lorentz_hi = to;
}

XF_INLINE void lorentz_exact_float(const Grid& g, const LorentzPart& p, int from, int to, TailBuffer& t) {
  if (from >= to) return;
  track(t, from, to);
  float* __restrict__ y = t.lorentz;
  const LorentzF a = lorentz_f(g, p);
  const float step = static_cast<float>(1.0 / g.inv_step);
  for (int i = from; i < to; ++i) {
    const float dx = static_cast<float>(i - a.ic) * step + a.offset;
    y[i] += a.amp / (1.0f + a.k * dx * dx);
  }
}

XF_INLINE void lorentz_exact_pair_float(const Grid& g, const LorentzPart& p, const LorentzPart& q, int from, int to,
                                        TailBuffer& t) {
  if (from >= to) return;
  track(t, from, to);
  float* __restrict__ y = t.lorentz;
  const LorentzF a = lorentz_f(g, p), b = lorentz_f(g, q);
  const float step = static_cast<float>(1.0 / g.inv_step);
  for (int i = from; i < to; ++i) {
    const float dp = static_cast<float>(i - a.ic) * step + a.offset;
    const float dq = static_cast<float>(i - b.ic) * step + b.offset;
    const float u = 1.0f + a.k * dp * dp, v = 1.0f + b.k * dq * dq;
    y[i] += (a.amp * v + b.amp * u) / (u * v);
  }
}

// The exact parts through the float accumulator where there is one (uniform grids), else in double.
XF_INLINE void lorentz_exact(const Grid& g, const LorentzPart& p, int from, int to, double* __restrict__ out,
                             TailBuffer* t) {
  if (t != nullptr && t->lorentz != nullptr && g.uniform)
    lorentz_exact_float(g, p, from, to, *t);
  else
    lorentz_exact_double(g, p, from, to, out);
}

XF_INLINE void lorentz_exact_pair(const Grid& g, const LorentzPart& p, const LorentzPart& q, int from, int to,
                                  double* __restrict__ out, TailBuffer* t) {
  if (t != nullptr && t->lorentz != nullptr && g.uniform)
    lorentz_exact_pair_float(g, p, q, from, to, *t);
  else
    lorentz_exact_pair_double(g, p, q, from, to, out);
}

// The far tails of p as linear pieces (into d2), outside [in_lo, in_hi).
XF_INLINE void lorentz_tails(const Grid& g, const LorentzPart& p, TailBuffer* d2) {
  const double centre = p.centre, amp = p.amp, inv_h2 = p.inv_h2;
  const int lo = p.lo, hi = p.hi;
  const double step = 1.0 / g.inv_step;
  const double spacing = std::sqrt(kTailTolerance / 0.1875) / (p.fwhm * step);  // points per x^2
  auto value_at = [&](int k) {  // exact value at grid index k (k may be n: extrapolated position)
    const double dx = g.start + k * step - centre;
    return amp / (1.0 + inv_h2 * dx * dx);
  };
  // Right tail, walking outwards: each piece is sized at its near end and
  // shares its end value with the next piece.
  double v0 = value_at(p.in_hi);
  for (int k = p.in_hi; k < hi;) {
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
  double v1 = value_at(p.in_lo);
  for (int e = p.in_lo; e > lo;) {
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

XF_INLINE void add_lorentz_part(const Grid& g, const LorentzPart& p, double* __restrict__ out, TailBuffer* d2) {
  if (p.lo >= p.hi) return;
  lorentz_exact(g, p, p.in_lo, p.in_hi, out, d2);
  if (p.pieces) lorentz_tails(g, p, d2);
}

// Two Lorentzians: the exact parts where both are exact share one division per point.
XF_INLINE void add_lorentz_pair(const Grid& g, const LorentzPart& p, const LorentzPart& q, double* __restrict__ out,
                                TailBuffer* d2) {
  if (p.lo >= p.hi || q.lo >= q.hi) {
    add_lorentz_part(g, p, out, d2);
    add_lorentz_part(g, q, out, d2);
    return;
  }
  const int a = p.in_lo > q.in_lo ? p.in_lo : q.in_lo, b = p.in_hi < q.in_hi ? p.in_hi : q.in_hi;
  if (a >= b) {
    add_lorentz_part(g, p, out, d2);
    add_lorentz_part(g, q, out, d2);
    return;
  }
  lorentz_exact_pair(g, p, q, a, b, out, d2);
  lorentz_exact(g, p, p.in_lo, a, out, d2);
  lorentz_exact(g, p, b, p.in_hi, out, d2);
  lorentz_exact(g, q, q.in_lo, a, out, d2);
  lorentz_exact(g, q, b, q.in_hi, out, d2);
  if (p.pieces) lorentz_tails(g, p, d2);
  if (q.pieces) lorentz_tails(g, q, d2);
}

// The Gaussian component (1 - eta) (2/H) std::sqrt(ln2/pi) std::exp(-4 ln2 x^2/H^2) of `area`, within cut.gauss.
XF_INLINE void add_gaussian(const Grid& g, double centre, double area, double fwhm, double eta, const Cutoffs& cut,
                            double* __restrict__ out) {
  if (!(cut.gauss > 0.0)) return;
  const double* __restrict__ grid = g.x;
  const double amp = area * (1.0 - eta) * 2.0 * std::sqrt(kLn2 / kPi) / fwhm;
  const double k = kLn2 * (4.0 / (fwhm * fwhm));
  const int lo = lower_index(g, centre - cut.gauss), hi = lower_index(g, centre + cut.gauss);
  if (g.uniform && lo < hi) {
    // On a uniform grid std::exp(-k (x0 + j s)^2) follows from two products per
    // point: g_{j+1} = g_j r_j, r_{j+1} = r_j q with q = std::exp(-2 k s^2)
    // (three exp calls per peak instead of one per point; the window is a
    // few dozen points, so rounding stays at the 1e-14 level).
    const double step = 1.0 / g.inv_step;
    const double x0 = grid[lo] - centre;
    // std::exp here: three independent calls per peak, where glibc's table-driven exp is quicker
    // than exp_arith's 14-deep Horner chain (which pays off only in vector loops).
    double value = amp * std::exp(-k * x0 * x0);
    double ratio = std::exp(-k * step * (2.0 * x0 + step));
    const double q = std::exp(-2.0 * k * step * step);
    int i = lo;
#if !defined(__CUDA_ARCH__)
    if (hi - lo >= 8) {
      // The same recurrence in four interleaved lanes (one vector), so that the two dependent
      // products per point stop bounding the speed: lane j holds point lo + 4m + j and steps by
      // the product of four consecutive ratios, which itself steps by q^16.
      typedef double Double4 __attribute__((vector_size(32)));
      Double4 v, r4;
      double ratios[7];
      for (int j = 0; j < 7; ++j) {
        if (j < 4) {
          v[j] = value;
          value *= ratio;
        }
        ratios[j] = ratio;
        ratio *= q;
      }
      for (int j = 0; j < 4; ++j) r4[j] = ratios[j] * ratios[j + 1] * ratios[j + 2] * ratios[j + 3];
      const double q2 = q * q, q4 = q2 * q2, q8 = q4 * q4, q16 = q8 * q8;
      for (; i + 4 <= hi; i += 4) {
        Double4 o;
        std::memcpy(&o, out + i, sizeof o);
        o += v;
        std::memcpy(out + i, &o, sizeof o);
        v *= r4;
        r4 *= q16;
      }
      for (int j = 0; i + j < hi; ++j) out[i + j] += v[j];
      return;
    }
#endif
    for (; i < hi; ++i) {
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

// Add `area` times a unit-area pseudo-Voigt
//   pV(x) = eta 2/(pi H) / (1 + 4x^2/H^2) + (1 - eta) (2/H) std::sqrt(ln2/pi) std::exp(-4 ln2 x^2/H^2)
// (Thompson, Cox & Hastings 1987, eq. 1) centred at `centre` to out[], on
// the points of `grid` within each component's cutoff (profile_cutoffs).  The
// Gaussian is short and evaluated exactly; the Lorentzian exactly near the
// centre and, on uniform grids with a tail buffer d2 (else nullptr) and a
// tail longer than 32 points, as linear pieces in the far tail.  Profiles are point-sampled (as in Rietveld
// programs), so the step should be finer than the FWHM.
XF_INLINE void add_peak(const Grid& g, double centre, double area, double fwhm, double eta, const Cutoffs& cut,
                        double* __restrict__ out, TailBuffer* d2) {
  if (!(fwhm > 0.0)) return;
  add_lorentz_part(g, lorentz_part(g, centre, area, fwhm, eta, cut, d2 != nullptr), out, d2);
  add_gaussian(g, centre, area, fwhm, eta, cut, out);
}

// One peak of one line, everything add_peak needs.
struct PeakSpec {
  double centre, area, fwhm, eta;
  Cutoffs cut;
};

// The two lines of a doublet (K-alpha1 and K-alpha2 of one reflection): the
// same as add_peak for each, with the exact Lorentzian parts evaluated in one
// pass (one division per point for both).
XF_INLINE void add_peak_pair(const Grid& g, const PeakSpec& a, const PeakSpec& b, double* __restrict__ out,
                             TailBuffer* d2) {
  if (!(a.fwhm > 0.0) || !(b.fwhm > 0.0)) {
    add_peak(g, a.centre, a.area, a.fwhm, a.eta, a.cut, out, d2);
    add_peak(g, b.centre, b.area, b.fwhm, b.eta, b.cut, out, d2);
    return;
  }
  add_lorentz_pair(g, lorentz_part(g, a.centre, a.area, a.fwhm, a.eta, a.cut, d2 != nullptr),
                   lorentz_part(g, b.centre, b.area, b.fwhm, b.eta, b.cut, d2 != nullptr), out, d2);
  add_gaussian(g, a.centre, a.area, a.fwhm, a.eta, a.cut, out);
  add_gaussian(g, b.centre, b.area, b.fwhm, b.eta, b.cut, out);
}

}  // namespace xrdflow
