// Compiled (not run) by tests/test_device_headers.py: every physics header
// must build as __host__ __device__ code, so that CUDA kernels can call the
// same functions as the CPU drivers (no exceptions, allocation or virtual calls).
#include "xrdflow/lattice.hpp"
#include "xrdflow/symmetry.hpp"
#include "xrdflow/reflections.hpp"
#include "xrdflow/scattering.hpp"
#include "xrdflow/structure_factor.hpp"
#include "xrdflow/profile.hpp"
#include "xrdflow/render.hpp"
using namespace xrdflow;
__global__ void k(const double* lat, const double* frac, const int* kind, const double* wr, const double* wi,
                  const double* grid, int n, double* out, double* f2) {
  Metric g = direct_metric(lat);
  Metric gs = reciprocal_metric(g);
  Miller h{1, 1, 0};
  double q2 = inv_d2(gs, h);
  int mult = 0;
  Rotation r{{1,0,0,0,1,0,0,0,1}};
  canonical_in_orbit(h, &r, 1, &mult);
  f2[0] = structure_factor_f2_direct(h, frac, kind, 2, wr, wi) + q2 + mult;
  double s = 0.3, c = 0.95;
  PeakShape shape = tch_shape_tc(s / c, c, 1.54, ProfileParams{0.01, 0, 0.01, 0, 0.01, 0, 0.9, 0});
  Cutoffs cut = profile_cutoffs(shape.fwhm_deg, shape.eta, 1e-3);
  Grid gr{grid, n, true, grid[0], 1.0 / (grid[1] - grid[0])};
  TailBuffer tails{out + n, n + 2, -1};
  add_peak(gr, 30.0, lorentz_polarization_sc(s, c, 1.0, false), shape.fwhm_deg, shape.eta, cut, out, &tails);
  finish_tails(tails, n, out);
}
int main() { return 0; }
