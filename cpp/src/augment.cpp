// Driver for augmented rendering: every sample re-renders cached reflections
// with its own draws of sample and instrument parameters.
#include <algorithm>
#include <cmath>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "dispatch.hpp"
#include "drivers.hpp"
#include "fail.hpp"
#include "parallel.hpp"
#include "xrdflow/augment.hpp"
#include "xrdflow/lattice.hpp"
#include "xrdflow/symmetry.hpp"

namespace xrdflow {
namespace {

constexpr int kMaxPhases = 3;

// Index of each parameter in a sample's row; names below, same order.
enum Param : int {
  P_WAVELENGTH, P_KALPHA2_RATIO, P_WIDTH_SCALE, P_SIZE_NM, P_MICROSTRAIN, P_ZERO_SHIFT, P_DISPLACEMENT,
  P_STRAIN,                       // 6 entries: e11 e22 e33 e23 e13 e12
  P_MARCH_R = P_STRAIN + 6, P_PO_DIRECTION,  // 3 entries
  P_B_EXTRA = P_PO_DIRECTION + 3, P_N_PHASES, P_PHASE,  // kMaxPhases entries
  P_FRACTION = P_PHASE + kMaxPhases,                    // kMaxPhases entries
  P_BACKGROUND = P_FRACTION + kMaxPhases, P_HUMP, P_HUMP_CENTER, P_HUMP_FWHM, P_COUNTS, P_READ_NOISE, P_SCALE,
  P_COUNT
};

const int kLowIndexDirections[7][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 0}, {1, 0, 1}, {0, 1, 1}, {1, 1, 1}};

double metric_dot(const Metric& g, const double* u, const double* v) {
  return u[0] * v[0] * g.g11 + u[1] * v[1] * g.g22 + u[2] * v[2] * g.g33 + (u[0] * v[1] + u[1] * v[0]) * g.g12 +
         (u[0] * v[2] + u[2] * v[0]) * g.g13 + (u[1] * v[2] + u[2] * v[1]) * g.g23;
}

// The rows of one cached structure, checked when a sample uses it.
void check_structure(const CacheView& c, int64_t s) {
  if (!(c.cell_mass[s] > 0.0) || !std::isfinite(c.cell_mass[s])) fail("structure ", s, " has no positive cell mass");
  const double v2 = metric_determinant(direct_metric(c.lattices + 9 * s));
  if (!(v2 > 0.0) || !std::isfinite(v2)) fail("structure ", s, " of the cache has a degenerate lattice");
  for (int64_t i = 9 * c.laue_offsets[s]; i < 9 * c.laue_offsets[s + 1]; ++i)
    if (c.laue_rotations[i] < -64 || c.laue_rotations[i] > 64) fail("Laue rotation entries must lie in [-64, 64]");
  for (int64_t i = c.refl.offsets[s]; i < c.refl.offsets[s + 1]; ++i) {
    if (!(c.refl.d[i] > 0.0) || !std::isfinite(c.refl.d[i]) || !std::isfinite(c.refl.f2[i]) || c.refl.multiplicity[i] < 1)
      fail("reflection ", i, " is invalid (needs d > 0, finite |F|^2, multiplicity >= 1)");
    for (int k = 0; k < 3; ++k)
      if (c.hkl[3 * i + k] < -100000 || c.hkl[3 * i + k] > 100000) fail("reflection ", i, " has absurd Miller indices");
  }
}

// One phase of a sample: its reflections with strained d and weights
// M |F|^2 x (Debye-Waller) x (texture), appended to d_out / w_out.
void draw_phase(const CacheView& c, int64_t s, const AugmentConfig& cfg, double lambda1, double cos2m, bool neutron,
                double phase_scale, SampleRng& rng, double* row, bool report, std::vector<double>& d_out,
                std::vector<double>& w_out) {
  check_structure(c, s);
  double e[6] = {0, 0, 0, 0, 0, 0};
  for (double& x : e) x = cfg.strain > 0.0 ? uniform_in(rng, -cfg.strain, cfg.strain) : 0.0;
  const bool textured = bernoulli(rng, cfg.po_probability);
  const double r = textured ? uniform_in(rng, cfg.po_r_lo, cfg.po_r_hi) : 1.0;
  int dir[3] = {cfg.po_direction[0], cfg.po_direction[1], cfg.po_direction[2]};
  if (textured && cfg.po_random_direction) {
    const int pick = std::min(6, static_cast<int>(uniform(rng) * 7.0));
    std::copy(kLowIndexDirections[pick], kLowIndexDirections[pick] + 3, dir);
  }
  const double b_extra = uniform_in(rng, cfg.b_extra_lo, cfg.b_extra_hi);
  if (report) {
    for (int k = 0; k < 6; ++k) row[P_STRAIN + k] = e[k];
    row[P_MARCH_R] = r;
    for (int k = 0; k < 3; ++k) row[P_PO_DIRECTION + k] = textured ? dir[k] : 0.0;
    row[P_B_EXTRA] = b_extra;
  }

  // Strained metric, averaged over the Laue group so that the crystal keeps
  // its symmetry: peaks move with the lattice but symmetry-equivalent
  // reflections stay together (their multiplicity stays valid).
  const int n_laue = static_cast<int>(c.laue_offsets[s + 1] - c.laue_offsets[s]);
  Rotation laue[48];
  for (int k = 0; k < n_laue; ++k) std::copy_n(c.laue_rotations + 9 * (c.laue_offsets[s] + k), 9, laue[k].m);
  double strained[9];
  strain_lattice(c.lattices + 9 * s, e, strained);
  const Metric gs = symmetrized_metric(reciprocal_metric(direct_metric(strained)), laue, n_laue);
  const double pref[3] = {static_cast<double>(dir[0]), static_cast<double>(dir[1]), static_cast<double>(dir[2])};
  const double pref_len2 = metric_dot(gs, pref, pref);
  // Texture averages the March-Dollase factor over the symmetry-equivalent
  // reflections R^T h that one peak holds: (R^T h) . G* p = h . (R w) with
  // w = G* p, so each operation becomes a vector v = R w, once per sample.
  // -R gives -v and the same factor, so with the inversion in the group (a
  // Laue group has it) the proper rotations alone give the same average.
  double vx[48], vy[48], vz[48];
  int n_ops = 0;
  if (textured && pref_len2 > 0.0) {
    const double w[3] = {gs.g11 * pref[0] + gs.g12 * pref[1] + gs.g13 * pref[2],
                         gs.g12 * pref[0] + gs.g22 * pref[1] + gs.g23 * pref[2],
                         gs.g13 * pref[0] + gs.g23 * pref[1] + gs.g33 * pref[2]};
    int n_proper = 0;
    for (int k = 0; k < n_laue; ++k) n_proper += determinant(laue[k]) > 0 ? 1 : 0;
    const bool proper_only = 2 * n_proper == n_laue;
    for (int k = 0; k < n_laue; ++k) {
      if (proper_only && determinant(laue[k]) < 0) continue;
      const int* m = laue[k].m;
      vx[n_ops] = m[0] * w[0] + m[1] * w[1] + m[2] * w[2];
      vy[n_ops] = m[3] * w[0] + m[4] * w[1] + m[5] * w[2];
      vz[n_ops] = m[6] * w[0] + m[7] * w[1] + m[8] * w[2];
      ++n_ops;
    }
  }

  const int64_t i0 = c.refl.offsets[s], n = c.refl.offsets[s + 1] - i0;
  const size_t first = d_out.size();
  double total_plain = 0.0, total_textured = 0.0;
  for (int64_t i = i0; i < i0 + n; ++i) {
    const Miller h{c.hkl[3 * i], c.hkl[3 * i + 1], c.hkl[3 * i + 2]};
    const double q2 = inv_d2(gs, h);
    const double d = 1.0 / std::sqrt(q2);
    double w = c.refl.multiplicity[i] * c.refl.f2[i];
    if (b_extra != 0.0) w *= std::exp(-2.0 * b_extra * 0.25 * q2);  // |F|^2 carries exp(-2 B s^2)
    double texture = 1.0;
    if (n_ops > 0) {
      const double hx = h.h, hy = h.k, hz = h.l, inv_norm = 1.0 / (q2 * pref_len2);
      double factor[48];
      for (int k = 0; k < n_ops; ++k) {  // vectorizes; the sum below keeps its order
        const double dot = hx * vx[k] + hy * vy[k] + hz * vz[k];
        factor[k] = march_dollase(dot * dot * inv_norm, r);
      }
      double sum = 0.0;
      for (int k = 0; k < n_ops; ++k) sum += factor[k];
      texture = sum / n_ops;
    }
    // Total intensity is conserved: weigh by what the primary line records.
    // (Without texture the two totals are the same sums and their ratio is 1.)
    const double sin_t = lambda1 / (2.0 * d);
    if (n_ops > 0 && sin_t < 1.0) {
      const double lp = lorentz_polarization_sc(sin_t, std::sqrt(1.0 - sin_t * sin_t), cos2m, neutron);
      total_plain += w * lp;
      total_textured += w * texture * lp;
    }
    d_out.push_back(d);
    w_out.push_back(w * texture);
  }
  const double renorm = total_textured > 0.0 ? phase_scale * total_plain / total_textured : phase_scale;
  if (renorm != 1.0)
    for (size_t i = first; i < w_out.size(); ++i) w_out[i] *= renorm;
}

// Words of Philox blocks first + j, j in [0, n_blocks), of a sample's
// counter (4 words per block, block order).  Blocks are independent: written
// so that the compiler runs several at once in vector registers (portable
// version; GCC turns the 32 x 32 -> 64-bit products into shuffles and
// emulated 64-bit multiplies, so x86-64 with AVX2 takes philox_words_avx2).
XF_VECTOR_CLONES void philox_words_generic(const SampleRng& r, uint32_t first, int n_blocks, uint32_t* __restrict__ out) {
  constexpr int kLanes = 8;  // blocks per group, one per vector lane (AVX2: 8 x 32 bits)
  int j = 0;
  for (; j + kLanes <= n_blocks; j += kLanes) {
    uint32_t x0[kLanes], x1[kLanes], x2[kLanes], x3[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      x0[l] = r.c0;
      x1[l] = r.c1;
      x2[l] = r.c2;
      x3[l] = first + static_cast<uint32_t>(j + l);
    }
    uint32_t k0 = r.key0, k1 = r.key1;
    for (int round = 0; round < 10; ++round) {
      for (int l = 0; l < kLanes; ++l) {
        const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * x0[l], p1 = static_cast<uint64_t>(0xCD9E8D57u) * x2[l];
        const uint32_t y0 = static_cast<uint32_t>(p1 >> 32) ^ x1[l] ^ k0, y2 = static_cast<uint32_t>(p0 >> 32) ^ x3[l] ^ k1;
        x1[l] = static_cast<uint32_t>(p1);
        x3[l] = static_cast<uint32_t>(p0);
        x0[l] = y0;
        x2[l] = y2;
      }
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (int l = 0; l < kLanes; ++l) {
      out[4 * (j + l)] = x0[l];
      out[4 * (j + l) + 1] = x1[l];
      out[4 * (j + l) + 2] = x2[l];
      out[4 * (j + l) + 3] = x3[l];
    }
  }
  for (; j < n_blocks; ++j) {
    const Philox4x32 b = stream_block(r, first + static_cast<uint32_t>(j));
    for (int k = 0; k < 4; ++k) out[4 * j + k] = b.v[k];
  }
}


#if defined(__x86_64__) && defined(__GNUC__) && !defined(XF_NO_CLONES)
#define XF_PHILOX_AVX2 1
// The same words with AVX2 intrinsics: four blocks per vector, each word in
// a 64-bit lane, so that one vpmuludq forms four 32 x 32 -> 64-bit products;
// two vectors at once, so that their dependent chains overlap.  Integer
// arithmetic only: the same words as philox_words_generic on every CPU
// (tests/test_augment.py compares the two through _core.philox_words).
// The high halves of the lanes hold leftovers that never reach a low half
// (vpmuludq reads low halves, the shift moves high into low only from a
// product), and only low halves are stored.
__attribute__((target("avx2"))) void philox_words_avx2(const SampleRng& r, uint32_t first, int n_blocks,
                                                       uint32_t* __restrict__ out) {
  constexpr int V = 2;
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53u), m1 = _mm256_set1_epi64x(0xCD9E8D57u);
  const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
  // The round keys, broadcast once per call rather than in every round of every group.
  __m256i kk0[10], kk1[10];
  {
    uint32_t k0 = r.key0, k1 = r.key1;
    for (int round = 0; round < 10; ++round) {
      kk0[round] = _mm256_set1_epi64x(k0);
      kk1[round] = _mm256_set1_epi64x(k1);
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
  }
  int j = 0;
  for (; j + 4 * V <= n_blocks; j += 4 * V) {
    __m256i x0[V], x1[V], x2[V], x3[V];
    for (int v = 0; v < V; ++v) {
      x0[v] = _mm256_set1_epi64x(r.c0);
      x1[v] = _mm256_set1_epi64x(r.c1);
      x2[v] = _mm256_set1_epi64x(r.c2);
      // Block counters first + j + 4v + l (mod 2^32 in the low halves).
      x3[v] = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<uint32_t>(first + static_cast<uint32_t>(j + 4 * v))), lanes);
    }
    for (int round = 0; round < 10; ++round) {
      for (int v = 0; v < V; ++v) {
        const __m256i p0 = _mm256_mul_epu32(x0[v], m0), p1 = _mm256_mul_epu32(x2[v], m1);
        const __m256i y0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), x1[v]), kk0[round]);
        const __m256i y2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), x3[v]), kk1[round]);
        x1[v] = p1;
        x3[v] = p0;
        x0[v] = y0;
        x2[v] = y2;
      }
    }
    for (int v = 0; v < V; ++v) {
      // Per block, words (0, 1) and (2, 3) as 64-bit pairs, then blocks in order.
      const __m256i w01 = _mm256_blend_epi32(x0[v], _mm256_slli_epi64(x1[v], 32), 0xAA);
      const __m256i w23 = _mm256_blend_epi32(x2[v], _mm256_slli_epi64(x3[v], 32), 0xAA);
      const __m256i lo = _mm256_unpacklo_epi64(w01, w23), hi = _mm256_unpackhi_epi64(w01, w23);
      uint32_t* o = out + 4 * (j + 4 * v);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
  }
  if (j < n_blocks) philox_words_generic(r, first + static_cast<uint32_t>(j), n_blocks - j, out + 4 * j);
}
#endif

// philox_words_avx2 where the CPU has AVX2 (checked once), else the portable loop.
void philox_words(const SampleRng& r, uint32_t first, int n_blocks, uint32_t* __restrict__ out) {
#ifdef XF_PHILOX_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) {
    philox_words_avx2(r, first, n_blocks, out);
    return;
  }
#endif
  philox_words_generic(r, first, n_blocks, out);
}

// z[i] = inverse_normal_f(word_to_uniform_f(words[i])) for i in [from, to), the same values: the
// central polynomial for every point in a vector pass (which also marks the points of the tail
// polynomial in `tail`), then the tail points redone, found 64 at a time by a vectorized count (about
// 0.7 % of uniform draws: the tail's square root and polynomial are not worth computing for all).
XF_INLINE void normal_deviates_f(const uint32_t* __restrict__ words, int from, int to, float* __restrict__ z,
                                 int* __restrict__ tail) {
  for (int i = from; i < to; ++i) {
    const float p = word_to_uniform_f(words[i]);
    const float w = giles_w(p);
    z[i] = giles_deviate(giles_central(w), p);
    tail[i] = w < kGilesTail ? 0 : 1;
  }
  for (int start = from; start < to; start += 64) {
    const int end = start + 64 < to ? start + 64 : to;
    int any = 0;
    for (int i = start; i < end; ++i) any += tail[i];
    if (any == 0) continue;
    for (int i = start; i < end; ++i)
      if (tail[i]) {
        const float p = word_to_uniform_f(words[i]);
        z[i] = giles_deviate(giles_tail(giles_w(p)), p);
      }
  }
}

// Scratch arrays of one thread, reused across samples (no allocation per pattern).
struct Scratch {
  std::vector<uint32_t> words, read_words;
  std::vector<float> lam, z;
  std::vector<int> small, exact, tail;
  std::vector<double> d, w, acc;
  void fit(int n) {
    const size_t m = static_cast<size_t>(n) + 4;
    if (words.size() < m) {
      words.resize(m);
      read_words.resize(m);
      lam.resize(m);
      z.resize(m);
      small.resize(m);
      exact.resize(m);
      tail.resize(m);
    }
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// poisson_inverse (augment.hpp) for kPoissonLanes points at once, same steps
// and so the same values: a lane's count grows only while its own u > cdf,
// and steps are taken eight at a time while any lane still searches (the
// extra steps leave finished lanes' counts alone).  Written with GCC/Clang
// vector types (four vectors of four doubles: AVX2 registers in the AVX2 and
// AVX-512 clones, pairs of SSE2 registers otherwise), since the
// auto-vectorizer leaves this loop nest scalar; four independent vectors so
// that the multiply-add chains of consecutive steps overlap.
constexpr int kPoissonLanes = 16;
constexpr int kPoissonVectors = kPoissonLanes / 4;
static_assert(kPoissonMaxSteps % 8 == 0, "steps come in blocks of eight");
typedef double Double4 __attribute__((vector_size(32)));
typedef int64_t Int4 __attribute__((vector_size(32)));
XF_VECTOR_CLONES void poisson_lanes(const double* __restrict__ lam, const double* __restrict__ u,
                                    double* __restrict__ k_out) {
  constexpr int V = kPoissonVectors;  // independent vectors: their dependent chains overlap
  Double4 lam_v[V], u_v[V], term[V], cdf[V], k[V];
  for (int h = 0; h < V; ++h) {
    for (int l = 0; l < 4; ++l) {
      lam_v[h][l] = lam[4 * h + l];
      u_v[h][l] = u[4 * h + l];
      term[h][l] = exp_neg(lam[4 * h + l]);
    }
    cdf[h] = term[h];
    k[h] = Double4{0.0, 0.0, 0.0, 0.0};
  }
  const Int4 one_bits = (Int4)(Double4{1.0, 1.0, 1.0, 1.0});
  for (int first = 1; first <= kPoissonMaxSteps; first += 8) {
    for (int step = first; step < first + 8; ++step) {
      const double inv = 1.0 / step;
      for (int h = 0; h < V; ++h) {
        const Int4 go = u_v[h] > cdf[h];      // all bits set where the lane still searches, else 0
        k[h] += (Double4)(go & one_bits);     // the bits of 1.0 where searching, of 0.0 elsewhere
        term[h] *= lam_v[h] * inv;
        cdf[h] += term[h];
      }
    }
    Int4 searching = u_v[0] > cdf[0];
    for (int h = 1; h < V; ++h) searching |= u_v[h] > cdf[h];
    if (!(searching[0] | searching[1] | searching[2] | searching[3])) break;
  }
  for (int h = 0; h < V; ++h)
    for (int l = 0; l < 4; ++l) k_out[4 * h + l] = k[h][l];
}

// Poisson counts of points j in [0, n) through poisson_lanes, kPoissonLanes at
// a time (the last group padded with lam = 0, which stops at once):
// lam_of(j) and u_of(j) give a point's mean and uniform, store(j, k) takes its count.
template <class LamOf, class UOf, class Store>
XF_INLINE void poisson_in_lanes(int64_t n, LamOf lam_of, UOf u_of, Store store) {
  for (int64_t g = 0; g < n; g += kPoissonLanes) {
    double lam_g[kPoissonLanes], u_g[kPoissonLanes], k_g[kPoissonLanes];
    const int64_t m = n - g < kPoissonLanes ? n - g : kPoissonLanes;
    for (int l = 0; l < kPoissonLanes; ++l) {
      lam_g[l] = l < m ? lam_of(g + l) : 0.0;
      u_g[l] = l < m ? u_of(g + l) : 0.5;
    }
    poisson_lanes(lam_g, u_g, k_g);
    for (int64_t l = 0; l < m; ++l) store(g + l, k_g[l]);
  }
}

// acc[i] <- (Poisson(counts y_i+) + N(0, read^2)) / counts for every point, y = in_scale acc
// (counting_noise of augment.hpp in passes over the pattern; point i draws
// from word i of the sample's noise stream, see kNoiseStream).
XF_VECTOR_CLONES void add_counting_noise(const SampleRng& rng, double counts, double read, int np, double in_scale,
                                        double* __restrict__ acc) {
  Scratch& sc = scratch();
  sc.fit(np);
  uint32_t* __restrict__ words = sc.words.data();
  float* __restrict__ lam = sc.lam.data();
  float* __restrict__ z = sc.z.data();
  int* __restrict__ small = sc.small.data();
  int* __restrict__ exact = sc.exact.data();
  const int n_blocks = (np + 3) / 4;
  philox_words(rng, kNoiseStream, n_blocks, words);
  // Pass 1 (vector): means, and which take the exact branch.
  for (int i = 0; i < np; ++i) {
    const double y = acc[i] * in_scale;
    lam[i] = static_cast<float>(counts * (y > 0.0 ? y : 0.0));
  }
  for (int i = 0; i < np; ++i) exact[i] = lam[i] < static_cast<float>(kPoissonExactBelow) ? 1 : 0;
  // Pass 2 (vector): normal deviates, then Cornish-Fisher everywhere (the small means are redone
  // below); two loops, since GCC 12 vectorizes each but not the two in one.
  int* __restrict__ tail = sc.tail.data();
  normal_deviates_f(words, 0, np, z, tail);
  const float read2 = static_cast<float>(read * read);
  const bool round = !(read > 0.0);
  for (int i = 0; i < np; ++i) {
    const float l = lam[i] > static_cast<float>(kPoissonExactBelow) ? lam[i] : static_cast<float>(kPoissonExactBelow);
    z[i] = cornish_fisher_f(l, read2, z[i], round);
  }
  const double inv_counts = 1.0 / counts;
  for (int i = 0; i < np; ++i) acc[i] = static_cast<double>(z[i]) * inv_counts;
  // Pass 3: the points of the exact branch, compacted without a branch, in
  // chunks of 64 skipped when they hold none (a vectorized integer sum).
  int n_small = 0;
  for (int start = 0; start < np; start += 64) {
    const int end = start + 64 < np ? start + 64 : np;
    int any = 0;
    for (int i = start; i < end; ++i) any += exact[i];
    if (any == 0) continue;
    for (int i = start; i < end; ++i) {
      small[n_small] = i;
      n_small += exact[i];
    }
  }
  // Pass 4: exact Poisson below kPoissonExactBelow (poisson_in_lanes), plus
  // their read noise: point i takes word i % 4 of block kReadNoiseStream +
  // i / 4, generated here in runs of blocks (gaps of a few blocks filled),
  // and its normal deviate as in pass 2.
  if (n_small == 0) return;
  uint32_t* __restrict__ read_words = sc.read_words.data();
  if (read > 0.0) {
    constexpr int kMaxGap = 8;  // blocks: cheaper to fill than to start a new run
    int run_first = small[0] / 4, run_last = run_first;
    for (int j = 1; j <= n_small; ++j) {
      const int b = j < n_small ? small[j] / 4 : -1;
      if (b >= 0 && b <= run_last + kMaxGap) {
        run_last = b;
        continue;
      }
      philox_words(rng, kReadNoiseStream + static_cast<uint32_t>(run_first), run_last - run_first + 1,
                   read_words + 4 * run_first);
      // Their normal deviates (vector loop; z is free again: pass 2's values are in acc).
      const int end = 4 * (run_last + 1) < np ? 4 * (run_last + 1) : np;
      normal_deviates_f(read_words, 4 * run_first, end, z, tail);
      run_first = run_last = b;
    }
  }
  poisson_in_lanes(
      n_small, [&](int64_t j) { return static_cast<double>(lam[small[j]]); },
      [&](int64_t j) { return word_to_uniform(words[small[j]]); },
      [&](int64_t j, double k) {
        const int i = small[j];
        acc[i] = (read > 0.0 ? k + read * static_cast<double>(z[i]) : k) * inv_counts;
      });
}

// acc[i] <- in_scale acc[i] + base + scale sum_k c_k T_k(x_i), x the grid mapped onto [-1, 1]
// (Chebyshev recurrence T_{k+1} = 2x T_k - T_{k-1}).  Sixteen points at a
// time, every term for them before the next sixteen, so that x, T_k, T_{k-1}
// and the sum stay in vector registers (one load and one store per point);
// each point's operations are the same, in the same order, as one term at a
// time over the whole grid.
XF_VECTOR_CLONES void add_chebyshev(const Grid& grid, const double* c, int order, double base, double scale,
                                   double in_scale, double* __restrict__ acc) {
  constexpr int kLanes = 16;
  const double x0 = grid.x[0], to_unit = 2.0 / (grid.x[grid.n - 1] - grid.x[0]);
  const double c0 = c[0], c1 = order > 1 ? c[1] : 0.0;
  double ck[16];
  for (int k = 2; k < order; ++k) ck[k] = scale * c[k];
  // The sixteen points from `start` (all of them in registers when len == kLanes, a constant).
  auto block = [&](int start, int len) {
    const double* __restrict__ g = grid.x + start;
    double* __restrict__ out = acc + start;
    double x[kLanes], t0[kLanes], t1[kLanes], sum[kLanes];
    for (int i = 0; i < len; ++i) {
      x[i] = (g[i] - x0) * to_unit - 1.0;
      t0[i] = 1.0;
      t1[i] = x[i];
      sum[i] = out[i] * in_scale + (base + scale * (c0 + c1 * x[i]));
    }
    for (int k = 2; k < order; ++k) {
      for (int i = 0; i < len; ++i) {
        const double t2 = 2.0 * x[i] * t1[i] - t0[i];
        t0[i] = t1[i];
        t1[i] = t2;
        sum[i] += ck[k] * t2;
      }
    }
    for (int i = 0; i < len; ++i) out[i] = sum[i];
  };
  int start = 0;
  for (; start + kLanes <= grid.n; start += kLanes) block(start, kLanes);
  if (start < grid.n) block(start, grid.n - start);
}

// acc[i] <- in_scale acc[i] + level exp(-k (x_i - centre)^2).  On a uniform grid by the
// product recurrence of add_gaussian (render.hpp), restarted from an exact
// exp every 64 points so that rounding stays at the 1e-14 level.
void add_hump(const Grid& grid, double centre, double k, double level, double in_scale, double* __restrict__ acc) {
  const int np = grid.n;
  if (!grid.uniform) {
    for (int i = 0; i < np; ++i) {
      const double dx = grid.x[i] - centre;
      acc[i] = acc[i] * in_scale + level * std::exp(-k * dx * dx);
    }
    return;
  }
  const double step = 1.0 / grid.inv_step, q = std::exp(-2.0 * k * step * step);
  for (int start = 0; start < np; start += 64) {
    const int end = start + 64 < np ? start + 64 : np;
    const double x0 = grid.start + start * step - centre;
    double value = level * std::exp(-k * x0 * x0), ratio = std::exp(-k * step * (2.0 * x0 + step));
    if (value == 0.0 || !(ratio < 1e300)) {  // far out on a narrow hump: 0 * inf must not appear
      for (int i = start; i < end; ++i) {
        const double dx = grid.x[i] - centre;
        acc[i] = acc[i] * in_scale + level * std::exp(-k * dx * dx);
      }
      continue;
    }
    for (int i = start; i < end; ++i) {
      acc[i] = acc[i] * in_scale + value;
      value *= ratio;
      ratio *= q;
    }
  }
}

// Render sample s into acc (before normalization) and its draws into row;
// returns the overall scale drawn for it.
double render_sample(const CacheView& c, int64_t s, const AugmentConfig& cfg, const RenderOptions& base,
                     const Grid& grid, SampleRng& rng, double* acc, double* row) {
  const int64_t n_cache = c.refl.n_structures;
  // --- instrument
  double lambdas[2] = {base.wavelengths[0], base.n_lines > 1 ? base.wavelengths[1] : 0.0};
  double base_ratio = base.n_lines > 1 ? base.line_weights[1] / base.line_weights[0] : 0.0;
  if (cfg.n_tubes > 0) {
    const int t = std::min(cfg.n_tubes - 1, static_cast<int>(uniform(rng) * cfg.n_tubes));
    lambdas[0] = cfg.tubes[2 * t];
    lambdas[1] = cfg.tubes[2 * t + 1];
    base_ratio = lambdas[1] > 0.0 ? 0.5 : 0.0;
  }
  double ratio = 0.0;
  if (lambdas[1] > 0.0 && base_ratio > 0.0 && bernoulli(rng, cfg.kalpha2_probability))
    ratio = uniform_in(rng, cfg.kalpha2_ratio_lo, cfg.kalpha2_ratio_hi);
  const double width_scale = uniform_in(rng, cfg.width_scale_lo, cfg.width_scale_hi);
  ProfileParams profile = base.profile;
  profile.u *= width_scale;
  profile.v *= width_scale;
  profile.w *= width_scale;
  if (cfg.size_nm_lo > 0.0) profile.size_angstrom = 10.0 * log_uniform_in(rng, cfg.size_nm_lo, cfg.size_nm_hi);
  if (cfg.microstrain_lo >= 0.0) profile.microstrain = uniform_in(rng, cfg.microstrain_lo, cfg.microstrain_hi);
  const double zero = base.zero_shift_deg + uniform_in(rng, cfg.zero_shift_lo, cfg.zero_shift_hi);
  const double displacement = uniform_in(rng, cfg.displacement_lo, cfg.displacement_hi);
  row[P_WAVELENGTH] = lambdas[0];
  row[P_KALPHA2_RATIO] = ratio;
  row[P_WIDTH_SCALE] = width_scale;
  row[P_SIZE_NM] = profile.size_angstrom / 10.0;
  row[P_MICROSTRAIN] = profile.microstrain;
  row[P_ZERO_SHIFT] = zero;
  row[P_DISPLACEMENT] = displacement;

  // --- phases: the sample's own structure, and partners for a mixture
  int64_t phases[kMaxPhases] = {s, -1, -1};
  int n_phases = 1;
  if (n_cache > 1 && cfg.max_phases > 1 && bernoulli(rng, cfg.mixture_probability)) {
    n_phases = 2 + std::min(cfg.max_phases - 2, static_cast<int>(uniform(rng) * (cfg.max_phases - 1)));
    for (int p = 1; p < n_phases; ++p) {
      int64_t j = std::min(n_cache - 2, static_cast<int64_t>(uniform(rng) * (n_cache - 1)));
      if (j >= s) ++j;  // any structure but the sample's own
      phases[p] = j;
    }
  }
  // Weight fractions uniform on the simplex (normalized exponential draws).
  double fraction[kMaxPhases] = {1.0, 0.0, 0.0}, total = 0.0;
  if (n_phases > 1) {
    for (int p = 0; p < n_phases; ++p) total += (fraction[p] = -std::log(uniform(rng)));
    for (int p = 0; p < n_phases; ++p) fraction[p] /= total;
  }
  row[P_N_PHASES] = n_phases;
  for (int p = 0; p < kMaxPhases; ++p) {
    row[P_PHASE + p] = static_cast<double>(phases[p]);
    row[P_FRACTION + p] = fraction[p];
  }

  std::vector<double>& d = scratch().d;
  std::vector<double>& w = scratch().w;
  d.clear();
  w.clear();
  for (int p = 0; p < n_phases; ++p) {
    // Rietveld scale of a phase in a mixture: S_p ~ W_p / (cell mass x V)
    // (Hill & Howard, J. Appl. Cryst. 20, 467 (1987)); relative to the first phase.
    double scale = 1.0;
    if (n_phases > 1) {
      const int64_t q = phases[p];
      const double vol_q = std::sqrt(metric_determinant(direct_metric(c.lattices + 9 * q)));
      const double vol_0 = std::sqrt(metric_determinant(direct_metric(c.lattices + 9 * s)));
      scale = (fraction[p] / (c.cell_mass[q] * vol_q)) / (fraction[0] / (c.cell_mass[s] * vol_0));
    }
    draw_phase(c, phases[p], cfg, lambdas[0], base.cos2_2theta_m, base.neutron, scale, rng, row, p == 0, d, w);
  }
  const double line_weights[2] = {1.0, ratio};
  accumulate_lines(grid, d.data(), w.data(), static_cast<int64_t>(d.size()),
                   Lines{lambdas, line_weights, ratio > 0.0 ? 2 : 1}, profile,
                   Placement{zero, displacement, cfg.radius_mm}, base.cos2_2theta_m, base.neutron, base.cutoff_rel,
                   acc);

  // --- background and counting noise, relative to the strongest point
  const int np = base.n_points;
  const bool background = bernoulli(rng, cfg.background_probability);
  const bool hump = bernoulli(rng, cfg.hump_probability);
  const bool noise = bernoulli(rng, cfg.noise_probability);
  row[P_BACKGROUND] = row[P_HUMP] = row[P_HUMP_CENTER] = row[P_HUMP_FWHM] = row[P_COUNTS] = row[P_READ_NOISE] = 0.0;
  // The factor acc still owes for its division by the peak: the first of the
  // stages below applies it as it passes over the pattern (x 1.0 afterwards,
  // which is exact), the same values as a pass of its own first.
  double pending = 1.0;
  if (background || hump || noise) {
    const double peak = max_value(acc, np);
    if (peak > 0.0) pending = 1.0 / peak;
  }
  if (background) {
    // A smooth, non-negative Chebyshev background of height <= level:
    // level (1 + p(x) / sum|c_k|) / 2 with x the grid mapped onto [-1, 1].
    double coef[16] = {0}, norm = 0.0;
    const int order = std::min(16, cfg.chebyshev_order + 1);
    for (int k = 0; k < order; ++k) norm += std::fabs(coef[k] = uniform_in(rng, -1.0, 1.0) / (k + 1));
    const double level = uniform_in(rng, cfg.background_lo, cfg.background_hi);
    row[P_BACKGROUND] = level;
    add_chebyshev(grid, coef, order, level * 0.5, level * 0.5 / norm, pending, acc);
    pending = 1.0;
  }
  if (hump) {
    // Amorphous halo: a broad Gaussian in 2-theta.
    const double centre = uniform_in(rng, cfg.hump_center_lo, cfg.hump_center_hi);
    const double fwhm = uniform_in(rng, cfg.hump_fwhm_lo, cfg.hump_fwhm_hi);
    const double level = uniform_in(rng, cfg.hump_lo, cfg.hump_hi);
    row[P_HUMP] = level;
    row[P_HUMP_CENTER] = centre;
    row[P_HUMP_FWHM] = fwhm;
    add_hump(grid, centre, 4.0 * kLn2 / (fwhm * fwhm), level, pending, acc);
    pending = 1.0;
  }
  if (noise) {
    // Counting statistics: the strongest point holds `counts` counts; each
    // point gets Poisson(counts y) plus Gaussian read noise, back in units of y.
    const double counts = log_uniform_in(rng, cfg.counts_lo, cfg.counts_hi);
    const double read = uniform_in(rng, cfg.read_noise_lo, cfg.read_noise_hi);
    row[P_COUNTS] = counts;
    row[P_READ_NOISE] = read;
    add_counting_noise(rng, counts, read, np, pending, acc);
  }
  const double scale = uniform_in(rng, cfg.scale_lo, cfg.scale_hi);
  row[P_SCALE] = scale;
  return scale;  // applied with the normalization in finish_pattern
}

}  // namespace

const std::vector<std::string>& augment_parameter_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n = {"wavelength", "kalpha2_ratio", "width_scale", "crystallite_size_nm", "microstrain",
                                  "zero_shift_deg", "displacement_mm"};
    for (const char* c : {"e11", "e22", "e33", "e23", "e13", "e12"}) n.push_back(std::string("strain_") + c);
    n.push_back("march_r");
    for (const char* c : {"h", "k", "l"}) n.push_back(std::string("po_") + c);
    n.push_back("b_extra");
    n.push_back("n_phases");
    for (int p = 0; p < kMaxPhases; ++p) n.push_back("phase_" + std::to_string(p));
    for (int p = 0; p < kMaxPhases; ++p) n.push_back("fraction_" + std::to_string(p));
    for (const char* c : {"background_level", "hump_level", "hump_center_deg", "hump_fwhm_deg", "counts",
                          "read_noise", "scale"})
      n.push_back(c);
    return n;
  }();
  return names;
}

void validate_augment(const CacheView& c, const AugmentConfig& cfg) {
  if (augment_parameter_names().size() != static_cast<size_t>(P_COUNT)) fail("internal: parameter names out of sync");
  // Only O(number of structures) checks here, so a call that renders a few
  // samples from a huge cache stays cheap; the rows of each structure are
  // checked when a sample first uses it (check_structure).
  const int64_t n = c.refl.n_structures;
  if (c.refl.offsets[0] != 0 || c.refl.offsets[n] != c.refl.n_reflections)
    fail("reflection offsets must start at 0 and end at the number of reflections");
  if (c.laue_offsets[0] != 0 || c.laue_offsets[n] != c.n_laue)
    fail("Laue offsets must start at 0 and end at the number of Laue operations");
  for (int64_t s = 0; s < n; ++s) {
    if (c.refl.offsets[s + 1] < c.refl.offsets[s]) fail("reflection offsets must be non-decreasing (structure ", s, ")");
    const int64_t n_laue = c.laue_offsets[s + 1] - c.laue_offsets[s];
    if (n_laue < 1 || n_laue > 48) fail("structure ", s, " of the cache has ", n_laue, " Laue operations (needs 1 to 48)");
  }
  if (cfg.max_phases < 1 || cfg.max_phases > kMaxPhases) fail("max_phases must be 1, 2 or 3");
  if (cfg.chebyshev_order < 0 || cfg.chebyshev_order > 15) fail("chebyshev_order must be in [0, 15]");
  if (!(cfg.radius_mm > 0.0)) fail("goniometer radius must be positive");
  for (int t = 0; t < 2 * cfg.n_tubes; ++t)
    if (!(cfg.tubes[t] >= 0.0) || !std::isfinite(cfg.tubes[t]) || (t % 2 == 0 && cfg.tubes[t] == 0.0))
      fail("tube wavelengths must be positive (K-alpha2 may be 0 for none)");
}

void poisson_by_inversion(const double* lam, const double* u, int64_t n, bool lanes, double* out) {
  for (int64_t i = 0; i < n; ++i) {
    if (!(lam[i] >= 0.0) || !(lam[i] < kPoissonExactBelow)) fail("mean ", i, " must be in [0, 20), got ", lam[i]);
    if (!(u[i] > 0.0) || !(u[i] < 1.0)) fail("uniform ", i, " must be in (0, 1), got ", u[i]);
  }
  if (!lanes) {
    for (int64_t i = 0; i < n; ++i) out[i] = poisson_inverse(lam[i], u[i]);
    return;
  }
  poisson_in_lanes(
      n, [&](int64_t j) { return lam[j]; }, [&](int64_t j) { return u[j]; },
      [&](int64_t j, double k) { out[j] = k; });
}

void philox_stream_words(uint64_t seed, uint64_t epoch, uint64_t index, uint32_t first, int n_blocks, bool portable,
                         uint32_t* out) {
  if (n_blocks < 0) fail("n_blocks must be >= 0, got ", n_blocks);
  const SampleRng rng = make_sample_rng(seed, epoch, index);
  if (portable)
    philox_words_generic(rng, first, n_blocks, out);
  else
    philox_words(rng, first, n_blocks, out);
}

void pattern_counting_noise(uint64_t seed, uint64_t epoch, uint64_t index, const double* lam, int n, double read,
                            double* out) {
  if (n < 1) fail("need at least one mean");
  if (!(read >= 0.0) || !std::isfinite(read)) fail("read noise must be >= 0, got ", read);
  for (int i = 0; i < n; ++i) {
    if (!(lam[i] >= 0.0) || !(lam[i] < 1e12)) fail("mean ", i, " must be in [0, 1e12), got ", lam[i]);
    out[i] = lam[i];
  }
  const SampleRng rng = make_sample_rng(seed, epoch, index);
  add_counting_noise(rng, 1.0, read, n, 1.0, out);
}

void render_augmented(const CacheView& c, const int64_t* indices, int64_t n, const AugmentConfig& cfg,
                      const RenderOptions& base, uint64_t seed, uint64_t epoch, float* out, double* params) {
  validate_augment(c, cfg);
  validate_render_options(base);
  for (int64_t i = 0; i < n; ++i)
    if (indices[i] < 0 || indices[i] >= c.refl.n_structures)
      fail("index ", indices[i], " is outside the cache of ", c.refl.n_structures, " structures");
  const Grid grid = make_grid(base);
  parallel_for(n, base.threads, [&](int64_t i) {
    SampleRng rng = make_sample_rng(seed, epoch, static_cast<uint64_t>(indices[i]));
    std::vector<double>& acc = scratch().acc;
    acc.assign(base.n_points, 0.0);
    double* row = params + i * P_COUNT;
    const double scale = render_sample(c, indices[i], cfg, base, grid, rng, acc.data(), row);
    finish_pattern(base, acc.data(), scale, out + i * static_cast<int64_t>(base.n_points));
  });
}

}  // namespace xrdflow
