// Bindings for the render stage (cached reflections -> patterns).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "arrays.hpp"
#include "convert.hpp"
#include "drivers.hpp"
#include "fail.hpp"

namespace py = pybind11;
using xrdflow_bind::checked_array;
using xrdflow_bind::length;

namespace {

xrdflow::ReflectionView reflection_view(const py::object& offsets, const py::object& d, const py::object& f2,
                                        const py::object& multiplicity) {
  xrdflow::ReflectionView r;
  r.offsets = checked_array<int64_t>(offsets, "offsets", {-1});
  r.n_structures = length(offsets) - 1;
  if (r.n_structures < 0) throw py::value_error("offsets must have at least one entry (0)");
  r.d = checked_array<double>(d, "d", {-1});
  r.n_reflections = length(d);
  r.f2 = checked_array<double>(f2, "F2", {r.n_reflections});
  r.multiplicity = checked_array<int32_t>(multiplicity, "multiplicity", {r.n_reflections});
  return r;
}

py::array_t<float> render_patterns(py::object offsets, py::object d, py::object f2, py::object multiplicity,
                                   const py::dict& instrument, int threads) {
  const xrdflow::ReflectionView r = reflection_view(offsets, d, f2, multiplicity);
  const xrdflow::RenderOptions o = xrdflow_bind::render_options(instrument, threads);
  // Validate before allocating the output.
  xrdflow::validate_reflections(r);
  xrdflow::validate_render_options(o);
  py::array_t<float> out({static_cast<py::ssize_t>(r.n_structures), static_cast<py::ssize_t>(o.n_points)});
  float* ptr = out.mutable_data();
  {
    py::gil_scoped_release release;
    xrdflow::render_patterns(r, o, ptr);
  }
  return out;
}

py::array_t<float> simulate_patterns(const py::dict& structures, double d_min, bool neutron, double max_box,
                                     double symprec, const py::dict& instrument, int threads) {
  const xrdflow::StructureBatch b = xrdflow_bind::structure_batch(structures);
  const xrdflow::ReflectionOptions ropt = xrdflow_bind::reflection_options(d_min, neutron, max_box, symprec, threads);
  const xrdflow::RenderOptions o = xrdflow_bind::render_options(instrument, threads);
  xrdflow::validate_structures(b, ropt);
  xrdflow::validate_render_options(o);
  py::array_t<float> out({static_cast<py::ssize_t>(b.n_structures), static_cast<py::ssize_t>(o.n_points)});
  float* ptr = out.mutable_data();
  {
    py::gil_scoped_release release;
    xrdflow::simulate_patterns(b, ropt, o, ptr);
  }
  return out;
}

py::tuple peak_intensities(py::object offsets, py::object d, py::object f2, py::object multiplicity,
                           double wavelength, double cos2_2theta_m, bool neutron) {
  const xrdflow::ReflectionView r = reflection_view(offsets, d, f2, multiplicity);
  const auto n = static_cast<py::ssize_t>(r.n_reflections);
  py::array_t<double> tt(n), lp(n), inten(n);
  xrdflow::peak_intensities(r, wavelength, cos2_2theta_m, neutron, tt.mutable_data(), lp.mutable_data(),
                            inten.mutable_data());
  return py::make_tuple(tt, lp, inten);
}

py::tuple peak_shape(py::object two_theta_deg, double wavelength, double u, double v, double w, double x, double y,
                     double size_angstrom, double scherrer_k, double microstrain, double cutoff_rel) {
  const double* tt = checked_array<double>(two_theta_deg, "two_theta_deg", {-1});
  const auto n = length(two_theta_deg);
  const xrdflow::ProfileParams p{u, v, w, x, y, size_angstrom, scherrer_k, microstrain};
  py::array_t<double> fwhm(n), eta(n), cutoff(n);
  auto f = fwhm.mutable_data();
  auto e = eta.mutable_data();
  auto c = cutoff.mutable_data();
  for (py::ssize_t i = 0; i < n; ++i) {
    const xrdflow::PeakShape s = xrdflow::tch_shape(tt[i], wavelength, p);
    f[i] = s.fwhm_deg;
    e[i] = s.eta;
    c[i] = s.fwhm_deg > 0.0 ? xrdflow::profile_cutoff(s.fwhm_deg, s.eta, cutoff_rel) : 0.0;
  }
  return py::make_tuple(fwhm, eta, cutoff);
}

}  // namespace

void add_render(py::module_& m) {
  m.def("render_patterns", &render_patterns, py::arg("offsets"), py::arg("d"), py::arg("F2"),
        py::arg("multiplicity"), py::arg("instrument"), py::arg("threads") = 0,
        "Render cached reflections into (B, n_points) float32 patterns (TCH pseudo-Voigt, LP, several lines); "
        "instrument is a dict (see convert.hpp). Runs without the GIL.");
  m.def("simulate_patterns", &simulate_patterns, py::arg("structures"), py::arg("d_min"), py::arg("neutron"),
        py::arg("max_box"), py::arg("symprec"), py::arg("instrument"), py::arg("threads") = 0,
        "Structures (CSR dict) straight to (B, n_points) float32 patterns, reflections and render of each "
        "structure in one threaded task. Runs without the GIL.");
  m.def("peak_intensities", &peak_intensities, py::arg("offsets"), py::arg("d"), py::arg("F2"),
        py::arg("multiplicity"), py::arg("wavelength"), py::arg("cos2_2theta_m"), py::arg("neutron"),
        "Per reflection: (two_theta_deg, LP, M |F|^2 LP) at one wavelength; 2-theta < 0 where unreachable.");
  m.def("peak_shape", &peak_shape, py::arg("two_theta_deg"), py::arg("wavelength"), py::arg("U"), py::arg("V"),
        py::arg("W"), py::arg("X"), py::arg("Y"), py::arg("size_angstrom"), py::arg("scherrer_k"),
        py::arg("microstrain"), py::arg("cutoff_rel"),
        "TCH pseudo-Voigt (FWHM deg, eta, cutoff half-width deg) at each 2-theta, exactly as the renderer uses them.");
}
