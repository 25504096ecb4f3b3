// Bindings for augmented rendering and its random-number generator.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "arrays.hpp"
#include "convert.hpp"
#include "drivers.hpp"
#include "fail.hpp"
#include "xrdflow/augment.hpp"

namespace py = pybind11;
using xrdflow_bind::checked_array;
using xrdflow_bind::length;

namespace {

double number(const py::dict& d, const char* key) {
  const double x = xrdflow_bind::dict_number(d, "augmentation config", key);
  if (!std::isfinite(x)) throw py::value_error(std::string("augmentation config['") + key + "'] must be finite");
  return x;
}

xrdflow::CacheView cache_view(const py::dict& c) {
  auto get = [&](const char* key) { return xrdflow_bind::dict_item(c, "cache", key); };
  xrdflow::CacheView v;
  v.refl.offsets = checked_array<int64_t>(get("offsets"), "offsets", {-1});
  v.refl.n_structures = length(get("offsets")) - 1;
  if (v.refl.n_structures < 0) throw py::value_error("offsets must have at least one entry");
  const py::ssize_t n1 = v.refl.n_structures + 1;
  v.refl.d = checked_array<double>(get("d"), "d", {-1});
  v.refl.n_reflections = length(get("d"));
  v.refl.f2 = checked_array<double>(get("F2"), "F2", {v.refl.n_reflections});
  v.refl.multiplicity = checked_array<int32_t>(get("multiplicity"), "multiplicity", {v.refl.n_reflections});
  v.hkl = checked_array<int32_t>(get("hkl"), "hkl", {v.refl.n_reflections, 3});
  v.lattices = checked_array<double>(get("lattices"), "lattices", {v.refl.n_structures, 3, 3});
  v.laue_offsets = checked_array<int64_t>(get("laue_offsets"), "laue_offsets", {n1});
  v.laue_rotations = checked_array<int32_t>(get("laue_rotations"), "laue_rotations", {-1, 3, 3});
  v.n_laue = length(get("laue_rotations"));
  v.cell_mass = checked_array<double>(get("cell_mass"), "cell_mass", {v.refl.n_structures});
  return v;
}

xrdflow::AugmentConfig augment_config(const py::dict& d) {
  xrdflow::AugmentConfig c;
  const py::object tubes = xrdflow_bind::dict_item(d, "augmentation config", "tubes");
  c.tubes = checked_array<double>(tubes, "tubes", {-1, 2});
  c.n_tubes = static_cast<int>(length(tubes));
  c.kalpha2_probability = number(d, "kalpha2_probability");
  c.kalpha2_ratio_lo = number(d, "kalpha2_ratio_lo");
  c.kalpha2_ratio_hi = number(d, "kalpha2_ratio_hi");
  c.width_scale_lo = number(d, "width_scale_lo");
  c.width_scale_hi = number(d, "width_scale_hi");
  c.size_nm_lo = number(d, "size_nm_lo");
  c.size_nm_hi = number(d, "size_nm_hi");
  c.microstrain_lo = number(d, "microstrain_lo");
  c.microstrain_hi = number(d, "microstrain_hi");
  c.zero_shift_lo = number(d, "zero_shift_lo");
  c.zero_shift_hi = number(d, "zero_shift_hi");
  c.displacement_lo = number(d, "displacement_lo");
  c.displacement_hi = number(d, "displacement_hi");
  c.radius_mm = number(d, "radius_mm");
  c.strain = number(d, "strain");
  c.po_probability = number(d, "po_probability");
  c.po_r_lo = number(d, "po_r_lo");
  c.po_r_hi = number(d, "po_r_hi");
  for (int k = 0; k < 3; ++k) c.po_direction[k] = static_cast<int>(number(d, ("po_direction_" + std::to_string(k)).c_str()));
  c.po_random_direction = number(d, "po_random_direction") != 0.0;
  c.b_extra_lo = number(d, "b_extra_lo");
  c.b_extra_hi = number(d, "b_extra_hi");
  c.mixture_probability = number(d, "mixture_probability");
  c.max_phases = static_cast<int>(number(d, "max_phases"));
  c.background_probability = number(d, "background_probability");
  c.background_lo = number(d, "background_lo");
  c.background_hi = number(d, "background_hi");
  c.chebyshev_order = static_cast<int>(number(d, "chebyshev_order"));
  c.hump_probability = number(d, "hump_probability");
  c.hump_center_lo = number(d, "hump_center_lo");
  c.hump_center_hi = number(d, "hump_center_hi");
  c.hump_fwhm_lo = number(d, "hump_fwhm_lo");
  c.hump_fwhm_hi = number(d, "hump_fwhm_hi");
  c.hump_lo = number(d, "hump_lo");
  c.hump_hi = number(d, "hump_hi");
  c.noise_probability = number(d, "noise_probability");
  c.counts_lo = number(d, "counts_lo");
  c.counts_hi = number(d, "counts_hi");
  c.read_noise_lo = number(d, "read_noise_lo");
  c.read_noise_hi = number(d, "read_noise_hi");
  c.scale_lo = number(d, "scale_lo");
  c.scale_hi = number(d, "scale_hi");
  return c;
}

py::tuple render_augmented(const py::dict& cache, py::object indices, const py::dict& config,
                           const py::dict& instrument, uint64_t seed, uint64_t epoch, int threads) {
  const xrdflow::CacheView c = cache_view(cache);
  const int64_t* idx = checked_array<int64_t>(indices, "indices", {-1});
  const auto n = length(indices);
  const xrdflow::AugmentConfig cfg = augment_config(config);
  const xrdflow::RenderOptions o = xrdflow_bind::render_options(instrument, threads);
  const auto n_params = static_cast<py::ssize_t>(xrdflow::augment_parameter_names().size());
  py::array_t<float> out({n, static_cast<py::ssize_t>(o.n_points)});
  py::array_t<double> params({n, n_params});
  float* y = out.mutable_data();
  double* p = params.mutable_data();
  {
    py::gil_scoped_release release;
    xrdflow::render_augmented(c, idx, n, cfg, o, seed, epoch, y, p);
  }
  return py::make_tuple(out, params);
}

py::tuple philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const xrdflow::Philox4x32 r = xrdflow::philox4x32_10(xrdflow::Philox4x32{{c0, c1, c2, c3}}, k0, k1);
  return py::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
}

py::array_t<double> sample_stream(uint64_t seed, uint64_t epoch, uint64_t index, const std::string& kind,
                                  double parameter, py::ssize_t count) {
  if (count < 0 || count > 100'000'000) throw py::value_error("count must be in [0, 1e8]");
  if (kind != "uniform" && kind != "normal" && kind != "poisson") throw py::value_error("kind must be uniform, normal or poisson");
  if (kind == "poisson" && !(parameter >= 0.0 && parameter < 1e12)) throw py::value_error("poisson mean must be in [0, 1e12)");
  py::array_t<double> out(count);
  double* o = out.mutable_data();
  xrdflow::SampleRng rng = xrdflow::make_sample_rng(seed, epoch, index);
  if (kind == "uniform")
    for (py::ssize_t i = 0; i < count; ++i) o[i] = xrdflow::uniform(rng);
  else if (kind == "normal")
    for (py::ssize_t i = 0; i < count; ++i) o[i] = xrdflow::normal(rng);
  else
    for (py::ssize_t i = 0; i < count; ++i) o[i] = xrdflow::poisson(rng, parameter);
  return out;
}

py::array_t<double> pattern_noise(uint64_t seed, uint64_t epoch, uint64_t index, const py::object& lam, double read) {
  const double* l = checked_array<double>(lam, "lam", {-1});
  const auto n = length(lam);
  if (n > 10'000'000) throw py::value_error("at most 1e7 means");
  py::array_t<double> out(n);
  xrdflow::pattern_counting_noise(seed, epoch, index, l, static_cast<int>(n), read, out.mutable_data());
  return out;
}

py::array_t<uint32_t> philox_words(uint64_t seed, uint64_t epoch, uint64_t index, uint32_t first, int n_blocks,
                                   bool portable) {
  if (n_blocks < 0 || n_blocks > 10'000'000) throw py::value_error("n_blocks must be in [0, 1e7]");
  py::array_t<uint32_t> out(4 * static_cast<py::ssize_t>(n_blocks));
  xrdflow::philox_stream_words(seed, epoch, index, first, n_blocks, portable, out.mutable_data());
  return out;
}

py::array_t<double> poisson_inversion(const py::object& lam, const py::object& u, bool lanes) {
  const double* l = checked_array<double>(lam, "lam", {-1});
  const auto n = length(lam);
  const double* v = checked_array<double>(u, "u", {n});
  py::array_t<double> out(n);
  xrdflow::poisson_by_inversion(l, v, n, lanes, out.mutable_data());
  return out;
}

// exp_arith / log_arith / log_arith_f of vecmath.hpp elementwise (for tests against NumPy).
py::array_t<double> vecmath(const std::string& function, const py::object& x) {
  const double* v = checked_array<double>(x, "x", {-1});
  const auto n = length(x);
  py::array_t<double> out(n);
  double* o = out.mutable_data();
  for (py::ssize_t i = 0; i < n; ++i) {
    if (function == "exp") {
      if (!(v[i] >= -700.0 && v[i] <= 700.0)) throw py::value_error("exp_arith needs -700 <= x <= 700");
      o[i] = xrdflow::exp_arith(v[i]);
    } else if (function == "log" || function == "log_f") {
      if (!(v[i] >= 2.2250738585072014e-308) || !std::isfinite(v[i]))
        throw py::value_error("log_arith needs a positive, finite, normal x");
      o[i] = function == "log" ? xrdflow::log_arith(v[i])
                               : static_cast<double>(xrdflow::log_arith_f(static_cast<float>(v[i])));
    } else if (function == "normal_f") {
      if (!(v[i] > 0.0 && v[i] < 1.0)) throw py::value_error("inverse_normal_f needs 0 < p < 1");
      o[i] = static_cast<double>(xrdflow::inverse_normal_f(static_cast<float>(v[i])));
    } else {
      throw py::value_error("function must be exp, log, log_f or normal_f");
    }
  }
  return out;
}

}  // namespace

void add_augment(py::module_& m) {
  m.def("render_augmented", &render_augmented, py::arg("cache"), py::arg("indices"), py::arg("config"),
        py::arg("instrument"), py::arg("seed"), py::arg("epoch"), py::arg("threads") = 0,
        "Augmented patterns (n, n_points) float32 and the drawn parameters (n, P) float64 of the cached "
        "structures `indices`; draws keyed by (seed, epoch, index). Runs without the GIL.");
  m.def("augment_parameter_names", &xrdflow::augment_parameter_names,
        "Names of the columns of the parameter array returned by render_augmented.");
  m.def("philox4x32_10", &philox, py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("k0"),
        py::arg("k1"), "One Philox4x32-10 block (for known-answer tests).");
  m.def("philox_words", &philox_words, py::arg("seed"), py::arg("epoch"), py::arg("index"), py::arg("first"),
        py::arg("n_blocks"), py::arg("portable") = false,
        "Words of Philox blocks first .. first + n_blocks - 1 of the stream keyed by (seed, epoch, index), as the "
        "pattern noise draws them, through the CPU's vector path or the portable loop (for tests that they agree).");
  m.def("pattern_noise", &pattern_noise, py::arg("seed"), py::arg("epoch"), py::arg("index"), py::arg("lam"),
        py::arg("read") = 0.0,
        "Counting noise Poisson(lam) + N(0, read^2) for every point of lam, drawn as render_augmented draws the "
        "noise of sample `index` (for statistical tests of that path).");
  m.def("poisson_inversion", &poisson_inversion, py::arg("lam"), py::arg("u"), py::arg("lanes"),
        "Poisson(lam) by inversion of u (means below 20) through the pattern path's vector lanes or the scalar "
        "search, for tests that the two agree.");
  m.def("vecmath", &vecmath, py::arg("function"), py::arg("x"),
        "exp_arith, log_arith, log_arith_f or inverse_normal_f (function 'exp', 'log', 'log_f', 'normal_f') of the core elementwise, for tests.");
  m.def("sample_stream", &sample_stream, py::arg("seed"), py::arg("epoch"), py::arg("index"), py::arg("kind"),
        py::arg("parameter") = 0.0, py::arg("count") = 1,
        "The first `count` draws (uniform, normal, or poisson with mean `parameter`) of the stream keyed by "
        "(seed, epoch, index): for statistical tests of the generator.");
}
