// Bindings for the reflection stage (symmetry-unique hkl, multiplicity, |F|^2).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "arrays.hpp"
#include "convert.hpp"
#include "drivers.hpp"
#include "fail.hpp"
#include "symmetry_search.hpp"
#include "xrdflow/lattice.hpp"

#include <cmath>

namespace py = pybind11;
using xrdflow_bind::checked_array;
using xrdflow_bind::length;
using xrdflow_bind::to_numpy;

namespace {

py::dict compute_reflections(const py::dict& structures, double d_min, bool neutron, double max_box, double symprec,
                             int threads) {
  const xrdflow::StructureBatch b = xrdflow_bind::structure_batch(structures);
  const xrdflow::ReflectionOptions opt = xrdflow_bind::reflection_options(d_min, neutron, max_box, symprec, threads);
  xrdflow::ReflectionTable t;
  {
    py::gil_scoped_release release;
    t = xrdflow::compute_reflections(b, opt);
  }
  const auto n = static_cast<py::ssize_t>(t.d.size());
  const auto n1 = static_cast<py::ssize_t>(b.n_structures + 1);
  py::dict out;
  out["offsets"] = to_numpy(std::move(t.offsets), {n1});
  out["hkl"] = to_numpy(std::move(t.hkl), {n, 3});
  out["d"] = to_numpy(std::move(t.d), {n});
  out["F2"] = to_numpy(std::move(t.f2), {n});
  out["multiplicity"] = to_numpy(std::move(t.multiplicity), {n});
  const auto n_laue = static_cast<py::ssize_t>(t.laue.size() / 9);
  out["laue_offsets"] = to_numpy(std::move(t.laue_offsets), {n1});
  out["laue_rotations"] = to_numpy(std::move(t.laue), {n_laue, 3, 3});
  return out;
}

py::tuple find_symmetry(py::object lattice, py::object frac, py::object kind, double symprec) {
  const double* lat = checked_array<double>(lattice, "lattice", {3, 3});
  const double* x = checked_array<double>(frac, "frac", {-1, 3});
  const auto n = length(frac);
  const int32_t* k = checked_array<int32_t>(kind, "kind", {n});
  if (!(symprec > 0.0 && symprec < 1.0)) throw py::value_error("symprec must be in (0, 1) angstrom");
  for (py::ssize_t i = 0; i < 3 * n; ++i)
    if (!std::isfinite(x[i])) throw py::value_error("frac must be finite");
  for (int i = 0; i < 9; ++i)
    if (!std::isfinite(lat[i])) throw py::value_error("lattice must be finite");
  const xrdflow::Metric g = xrdflow::direct_metric(lat);
  if (!(xrdflow::metric_determinant(g) > 1e-12 * g.g11 * g.g22 * g.g33))
    throw py::value_error("lattice is degenerate");
  xrdflow::SpaceGroupOps ops;
  {
    py::gil_scoped_release release;
    ops = xrdflow::find_space_group_operations(lat, x, k, static_cast<int>(n), symprec);
  }
  const auto m = static_cast<py::ssize_t>(ops.rotations.size());
  std::vector<int32_t> rot(9 * m);
  for (py::ssize_t i = 0; i < m; ++i) std::copy(ops.rotations[i].m, ops.rotations[i].m + 9, rot.begin() + 9 * i);
  return py::make_tuple(to_numpy(std::move(rot), {m, 3, 3}), to_numpy(std::move(ops.translations), {m, 3}));
}

}  // namespace

void add_reflections(py::module_& m) {
  m.def("compute_reflections", &compute_reflections, py::arg("structures"), py::arg("d_min"),
        py::arg("neutron") = false, py::arg("max_box") = 5e7, py::arg("symprec") = 1e-3, py::arg("threads") = 0,
        "Symmetry-unique reflections of a CSR batch of structures (a dict of flat arrays, see convert.hpp): dict "
        "of offsets (B+1), hkl (R,3) int32, d (R) angstrom, F2 (R) Friedel-averaged |F|^2, multiplicity (R) "
        "int32, laue_offsets (B+1) and laue_rotations (L,3,3) int32 (each structure's Laue group). Structures given with no operations get them detected in C++ with tolerance symprec "
        "(angstrom). Runs without the GIL.");
  m.def("find_symmetry", &find_symmetry, py::arg("lattice"), py::arg("frac"), py::arg("kind"), py::arg("symprec"),
        "Space-group operations (rotations (n,3,3) int32, translations (n,3)) of one structure, in the basis of "
        "its own cell; kind (N,) int32 labels chemically identical atoms.");
}
