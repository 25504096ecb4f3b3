// Driver for the cheap, every-sample stage: cached reflections -> patterns.
#include <algorithm>
#include <cmath>

#include "dispatch.hpp"
#include "drivers.hpp"
#include "fail.hpp"
#include "parallel.hpp"
#include "xrdflow/lattice.hpp"
#include "xrdflow/profile.hpp"
#include "xrdflow/augment.hpp"
#include "xrdflow/render.hpp"

namespace xrdflow {

void validate_render_options(const RenderOptions& o) {
  if (o.n_lines < 1) fail("at least one wavelength is needed");
  for (int i = 0; i < o.n_lines; ++i) {
    if (!(o.wavelengths[i] > 0.0) || !std::isfinite(o.wavelengths[i]))
      fail("wavelength ", i, " must be a positive number of angstrom, got ", o.wavelengths[i]);
    if (!(o.line_weights[i] >= 0.0) || !std::isfinite(o.line_weights[i]))
      fail("line weight ", i, " must be >= 0, got ", o.line_weights[i]);
  }
  if (o.n_points < 2) fail("the grid needs at least 2 points, got ", o.n_points);
  for (int i = 0; i < o.n_points; ++i) {
    if (!std::isfinite(o.grid_two_theta[i]) || !std::isfinite(o.axis[i])) fail("grid point ", i, " is not finite");
    if (i > 0 && !(o.grid_two_theta[i] > o.grid_two_theta[i - 1] && o.axis[i] > o.axis[i - 1]))
      fail("the grid must be strictly increasing; point ", i, " is not");
  }
  if (!(o.grid_two_theta[0] > 0.0) || !(o.grid_two_theta[o.n_points - 1] < 180.0))
    fail("2-theta grid must lie inside (0, 180) degrees");
  const auto& p = o.profile;
  const double vals[] = {p.u, p.v, p.w, p.x, p.y, p.size_angstrom, p.scherrer_k, p.microstrain,
                         o.zero_shift_deg, o.cos2_2theta_m, o.cutoff_rel};
  for (double v : vals)
    if (!std::isfinite(v)) fail("profile and instrument parameters must be finite");
  if (!(o.cutoff_rel > 0.0 && o.cutoff_rel < 1.0)) fail("cutoff_rel must be in (0, 1), got ", o.cutoff_rel);
}

void validate_reflections(const ReflectionView& r) {
  if (r.offsets[0] != 0 || r.offsets[r.n_structures] != r.n_reflections)
    fail("reflection offsets must start at 0 and end at the number of reflections");
  for (int64_t s = 0; s < r.n_structures; ++s)
    if (r.offsets[s + 1] < r.offsets[s]) fail("reflection offsets must be non-decreasing (structure ", s, ")");
  for (int64_t i = 0; i < r.n_reflections; ++i)
    if (!(r.d[i] > 0.0) || !std::isfinite(r.d[i]) || !std::isfinite(r.f2[i]) || r.multiplicity[i] < 1)
      fail("reflection ", i, " is invalid (needs d > 0, finite |F|^2, multiplicity >= 1)");
}

Grid make_grid(const RenderOptions& o) {
  Grid g{o.grid_two_theta, o.n_points, true, o.grid_two_theta[0], 0.0};
  const double step = (o.grid_two_theta[o.n_points - 1] - o.grid_two_theta[0]) / (o.n_points - 1);
  for (int i = 1; i < o.n_points && g.uniform; ++i)
    g.uniform = std::fabs(o.grid_two_theta[i] - o.grid_two_theta[i - 1] - step) <= 1e-9 * step;
  g.inv_step = 1.0 / step;
  return g;
}

namespace {

// Peak parameters of reflections d[0..n) in one line (struct of arrays; the
// restrict-qualified outputs let the loop vectorize): sin(theta) (>= 1:
// beyond 2-theta = 180 deg, not drawn), cos(theta), area (integrated
// intensity), TCH FWHM (deg) and eta, and the cutoffs of the two components.
XF_VECTOR_CLONES void peak_table(const double* __restrict__ d, const double* __restrict__ weight, int64_t n,
                                 double lambda, double line_weight, const ProfileParams profile, double cos2_2theta_m,
                                 bool neutron, double cutoff_rel, double* __restrict__ sin_out,
                                 double* __restrict__ cos_out, double* __restrict__ area_out,
                                 double* __restrict__ fwhm_out, double* __restrict__ eta_out,
                                 double* __restrict__ gauss_out, double* __restrict__ lorentz_out) {
  for (int64_t i = 0; i < n; ++i) {
    // Bragg: sin(theta) = lambda / 2d; every other trig value follows from it.
    const double sin_raw = lambda / (2.0 * d[i]);
    const double sin_t = sin_raw < 1.0 ? sin_raw : 0.5;  // any valid angle where nothing is drawn
    const double cos_t = std::sqrt(1.0 - sin_t * sin_t);
    const PeakShape shape = tch_shape_tc(sin_t / cos_t, cos_t, lambda, profile);
    const Cutoffs cut = profile_cutoffs(shape.fwhm_deg, shape.eta, cutoff_rel);
    sin_out[i] = sin_raw;
    cos_out[i] = cos_t;
    area_out[i] = line_weight * weight[i] * lorentz_polarization_sc(sin_t, cos_t, cos2_2theta_m, neutron);
    fwhm_out[i] = shape.fwhm_deg;
    eta_out[i] = shape.eta;
    gauss_out[i] = cut.gauss;
    lorentz_out[i] = cut.lorentz;
  }
}

}  // namespace

XF_VECTOR_CLONES void accumulate_lines(const Grid& grid, const double* d, const double* weight, int64_t n, const Lines& lines,
                      const ProfileParams& profile, const Placement& place, double cos2_2theta_m, bool neutron,
                      double cutoff_rel, double* acc) {
  const double lo = grid.x[0], hi = grid.x[grid.n - 1];
  // Second differences of the far Lorentzian tails: one zeroed buffer per
  // thread, reused (finish_tails clears what it touched).
  thread_local std::vector<double> buffer;
  if (buffer.size() < static_cast<size_t>(grid.n) + 2) buffer.assign(grid.n + 2, 0.0);
  // And a zeroed float accumulator for the exact Lorentzian parts (uniform grids; render.hpp).
  thread_local std::vector<float> lorentz;
  if (lorentz.size() < static_cast<size_t>(grid.n)) lorentz.assign(grid.n, 0.0f);
  TailBuffer tails{buffer.data(), grid.n + 2, -1, lorentz.data(), grid.n, 0};
  // Peak parameters of every (line, reflection), row line * n + i (peak_table;
  // asin for the drawn peaks only, in peak_of).
  thread_local std::vector<double> table;
  const size_t rows = static_cast<size_t>(lines.n) * static_cast<size_t>(n);
  if (table.size() < 7 * rows) table.resize(7 * rows);
  double* __restrict__ t_sin = table.data();
  double* __restrict__ t_cos = t_sin + rows;
  double* __restrict__ t_area = t_cos + rows;
  double* __restrict__ t_fwhm = t_area + rows;
  double* __restrict__ t_eta = t_fwhm + rows;
  double* __restrict__ t_gauss = t_eta + rows;
  double* __restrict__ t_lorentz = t_gauss + rows;
  for (int line = 0; line < lines.n; ++line) {
    const size_t r0 = static_cast<size_t>(line) * static_cast<size_t>(n);
    peak_table(d, weight, n, lines.wavelengths[line], lines.weights[line], profile, cos2_2theta_m, neutron,
               cutoff_rel, t_sin + r0, t_cos + r0, t_area + r0, t_fwhm + r0, t_eta + r0, t_gauss + r0,
               t_lorentz + r0);
  }
  // The peak of reflection i in one line; false when it is not drawn.
  auto peak_of = [&](int64_t i, int line, PeakSpec& p) {
    const size_t r = static_cast<size_t>(line) * static_cast<size_t>(n) + static_cast<size_t>(i);
    if (!(t_sin[r] < 1.0) || t_area[r] == 0.0 || !(t_fwhm[r] > 0.0)) return false;
    const double tt = 2.0 * std::asin(t_sin[r]) * kDegPerRad;
    double centre = tt + place.zero_shift_deg;
    if (place.displacement_mm != 0.0) centre += displacement_shift_deg(place.displacement_mm, place.radius_mm, t_cos[r]);
    const Cutoffs cut{t_gauss[r], t_lorentz[r]};
    const double reach = cut.gauss > cut.lorentz ? cut.gauss : cut.lorentz;
    if (centre + reach < lo || centre - reach > hi) return false;
    p = PeakSpec{centre, t_area[r], t_fwhm[r], t_eta[r], cut};
    return true;
  };
  // Reflection by reflection, so that the two lines of a doublet are drawn together (add_peak_pair).
  for (int64_t i = 0; i < n; ++i) {
    PeakSpec first{}, p{};
    bool pending = false;
    for (int line = 0; line < lines.n; ++line) {
      if (!peak_of(i, line, p)) continue;
      if (!pending) {
        first = p;
        pending = true;
      } else {
        add_peak_pair(grid, first, p, acc, &tails);
        pending = false;
      }
    }
    if (pending) add_peak(grid, first.centre, first.area, first.fwhm, first.eta, first.cut, acc, &tails);
  }
  finish_tails(tails, grid.n, acc);
}

namespace {

// Render structure s of r into `acc` (double accumulation, n_points).
void render_one(const ReflectionView& r, const RenderOptions& o, const Grid& grid, int64_t s, double* acc) {
  const int64_t i0 = r.offsets[s], n = r.offsets[s + 1] - i0;
  std::vector<double> weight(n);
  for (int64_t i = 0; i < n; ++i) weight[i] = r.multiplicity[i0 + i] * r.f2[i0 + i];
  accumulate_lines(grid, r.d + i0, weight.data(), n, Lines{o.wavelengths, o.line_weights, o.n_lines}, o.profile,
                   Placement{o.zero_shift_deg, 0.0, 1.0}, o.cos2_2theta_m, o.neutron, o.cutoff_rel, acc);
}

}  // namespace

// Largest of x[0..n) (n >= 1), in four independent lanes so that it vectorizes;
// the same value as *std::max_element(x, x + n) (NaNs after x[0] are skipped by both).
XF_VECTOR_CLONES double max_value(const double* x, int n) {
  double m[4] = {x[0], x[0], x[0], x[0]};
  int i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
  for (; i < n; ++i) m[0] = x[i] > m[0] ? x[i] : m[0];
  const double a = m[0] > m[1] ? m[0] : m[1], b = m[2] > m[3] ? m[2] : m[3];
  return a > b ? a : b;
}

namespace {

// The divisor of opt.normalization (max or trapezoid area), 0 for none.
double normalization_divisor(const RenderOptions& o, const double* acc) {
  double scale = 0.0;
  if (o.normalization == Normalization::max) {
    scale = max_value(acc, o.n_points);
  } else if (o.normalization == Normalization::area) {
    for (int i = 1; i < o.n_points; ++i) scale += 0.5 * (acc[i] + acc[i - 1]) * (o.axis[i] - o.axis[i - 1]);
  }
  return scale;
}

}  // namespace

// row[i] = float((acc[i] / divisor) x factor) in one pass, each step only
// where it applies (divisor > 0, factor != 1): the same values as dividing,
// then scaling, then converting in three passes over the pattern.
XF_VECTOR_CLONES void finish_pattern(const RenderOptions& o, const double* __restrict__ acc, double factor,
                                     float* __restrict__ row) {
  const int n = o.n_points;
  const double divisor = normalization_divisor(o, acc);
  if (divisor > 0.0 && factor != 1.0) {
    for (int i = 0; i < n; ++i) row[i] = static_cast<float>((acc[i] / divisor) * factor);
  } else if (divisor > 0.0) {
    for (int i = 0; i < n; ++i) row[i] = static_cast<float>(acc[i] / divisor);
  } else if (factor != 1.0) {
    for (int i = 0; i < n; ++i) row[i] = static_cast<float>(acc[i] * factor);
  } else {
    for (int i = 0; i < n; ++i) row[i] = static_cast<float>(acc[i]);
  }
}

namespace {

// Render structure s of r into one output row (double accumulation, then
// normalization and conversion to float32).
void render_structure(const ReflectionView& r, const RenderOptions& o, const Grid& grid, int64_t s, float* row) {
  std::vector<double> acc(o.n_points, 0.0);
  render_one(r, o, grid, s, acc.data());
  finish_pattern(o, acc.data(), 1.0, row);
}

}  // namespace

void render_patterns(const ReflectionView& r, const RenderOptions& o, float* out) {
  validate_reflections(r);
  validate_render_options(o);
  const Grid grid = make_grid(o);
  parallel_for(r.n_structures, o.threads, [&](int64_t s) {
    render_structure(r, o, grid, s, out + s * static_cast<int64_t>(o.n_points));
  });
}

void simulate_patterns(const StructureBatch& batch, const ReflectionOptions& ropt, const RenderOptions& o,
                       float* out) {
  validate_structures(batch, ropt);
  validate_render_options(o);
  const Grid grid = make_grid(o);
  parallel_for(batch.n_structures, o.threads, [&](int64_t s) {
    const StructureReflections refl = structure_reflections(batch, s, ropt);
    const int64_t offsets[2] = {0, static_cast<int64_t>(refl.d.size())};
    const ReflectionView one{1, offsets, offsets[1], refl.d.data(), refl.f2.data(), refl.multiplicity.data()};
    render_structure(one, o, grid, 0, out + s * static_cast<int64_t>(o.n_points));
  });
}

void peak_intensities(const ReflectionView& r, double wavelength, double cos2_2theta_m, bool neutron,
                      double* two_theta_deg, double* lp, double* intensity) {
  if (!(wavelength > 0.0) || !std::isfinite(wavelength)) fail("wavelength must be positive, got ", wavelength);
  for (int64_t i = 0; i < r.n_reflections; ++i) {
    const double tt = bragg_two_theta_deg(r.d[i], wavelength);
    two_theta_deg[i] = tt;
    lp[i] = (tt > 0.0 && tt < 180.0) ? lorentz_polarization(tt, cos2_2theta_m, neutron) : 0.0;
    intensity[i] = r.multiplicity[i] * r.f2[i] * lp[i];
  }
}

}  // namespace xrdflow
