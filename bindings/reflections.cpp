// Bindings for the reflection stage (symmetry-unique hkl, multiplicity, |F|^2).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "arrays.hpp"
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

py::dict compute_reflections(py::object lattice, py::object atom_offsets, py::object frac, py::object atom_type,
                             py::object occupancy, py::object b_iso, py::object type_offsets, py::object it92,
                             py::object fp, py::object fpp, py::object neutron_b, py::object op_offsets,
                             py::object rotations, py::object translations, double d_min, bool neutron,
                             double max_box, double symprec, int threads) {
  xrdflow::StructureBatch b;
  b.lattice = checked_array<double>(lattice, "lattice", {-1, 3, 3});
  b.n_structures = length(lattice);
  const py::ssize_t n1 = b.n_structures + 1;
  b.atom_offsets = checked_array<int64_t>(atom_offsets, "atom_offsets", {n1});
  b.frac = checked_array<double>(frac, "frac", {-1, 3});
  b.n_atoms = length(frac);
  b.atom_type = checked_array<int32_t>(atom_type, "atom_type", {b.n_atoms});
  b.occupancy = checked_array<double>(occupancy, "occupancy", {b.n_atoms});
  b.b_iso = checked_array<double>(b_iso, "b_iso", {b.n_atoms});
  b.type_offsets = checked_array<int64_t>(type_offsets, "type_offsets", {n1});
  b.it92 = checked_array<double>(it92, "it92", {-1, 9});
  b.n_types = length(it92);
  b.fp = checked_array<double>(fp, "fp", {b.n_types});
  b.fpp = checked_array<double>(fpp, "fpp", {b.n_types});
  b.neutron_b = checked_array<double>(neutron_b, "neutron_b", {b.n_types});
  b.op_offsets = checked_array<int64_t>(op_offsets, "op_offsets", {n1});
  b.rotations = checked_array<int32_t>(rotations, "rotations", {-1, 3, 3});
  b.n_ops = length(rotations);
  b.translations = checked_array<double>(translations, "translations", {b.n_ops, 3});

  xrdflow::ReflectionOptions opt;
  opt.d_min = d_min;
  opt.neutron = neutron;
  opt.max_box = max_box;
  opt.symprec = symprec;
  opt.threads = threads;
  xrdflow::ReflectionTable t;
  {
    py::gil_scoped_release release;
    t = xrdflow::compute_reflections(b, opt);
  }
  const auto n = static_cast<py::ssize_t>(t.d.size());
  py::dict out;
  out["offsets"] = to_numpy(std::move(t.offsets), {n1});
  out["hkl"] = to_numpy(std::move(t.hkl), {n, 3});
  out["d"] = to_numpy(std::move(t.d), {n});
  out["F2"] = to_numpy(std::move(t.f2), {n});
  out["multiplicity"] = to_numpy(std::move(t.multiplicity), {n});
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
  m.def("compute_reflections", &compute_reflections, py::arg("lattice"), py::arg("atom_offsets"), py::arg("frac"),
        py::arg("atom_type"), py::arg("occupancy"), py::arg("b_iso"), py::arg("type_offsets"), py::arg("it92"),
        py::arg("fp"), py::arg("fpp"), py::arg("neutron_b"), py::arg("op_offsets"), py::arg("rotations"),
        py::arg("translations"), py::arg("d_min"), py::arg("neutron") = false, py::arg("max_box") = 5e7,
        py::arg("symprec") = 1e-3, py::arg("threads") = 0,
        "Symmetry-unique reflections of a CSR batch of structures: dict of offsets (B+1), hkl (R,3) int32, "
        "d (R) angstrom, F2 (R) Friedel-averaged |F|^2, multiplicity (R) int32. Structures given with no "
        "operations get them detected in C++ with tolerance symprec (angstrom). Runs without the GIL.");
  m.def("find_symmetry", &find_symmetry, py::arg("lattice"), py::arg("frac"), py::arg("kind"), py::arg("symprec"),
        "Space-group operations (rotations (n,3,3) int32, translations (n,3)) of one structure, in the basis of "
        "its own cell; kind (N,) int32 labels chemically identical atoms.");
}
