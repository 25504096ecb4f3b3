#include "convert.hpp"

#include <string>

#include "arrays.hpp"

namespace py = pybind11;

namespace xrdflow_bind {
py::object dict_item(const py::dict& d, const char* dict_name, const char* key) {
  if (!d.contains(key)) throw py::value_error(std::string(dict_name) + " lacks the entry '" + key + "'");
  return d[key];
}

double dict_number(const py::dict& d, const char* dict_name, const char* key) {
  const py::object v = dict_item(d, dict_name, key);
  if (!py::isinstance<py::float_>(v) && !py::isinstance<py::int_>(v))
    throw py::type_error(std::string(dict_name) + "['" + key + "'] must be a number");
  return v.cast<double>();
}

namespace {

double number(const py::dict& d, const char* key) { return dict_number(d, "instrument", key); }

}  // namespace

xrdflow::StructureBatch structure_batch(const py::dict& s) {
  auto get = [&](const char* key) { return dict_item(s, "structures", key); };
  xrdflow::StructureBatch b;
  b.lattice = checked_array<double>(get("lattice"), "lattice", {-1, 3, 3});
  b.n_structures = length(get("lattice"));
  const py::ssize_t n1 = b.n_structures + 1;
  b.atom_offsets = checked_array<int64_t>(get("atom_offsets"), "atom_offsets", {n1});
  b.frac = checked_array<double>(get("frac"), "frac", {-1, 3});
  b.n_atoms = length(get("frac"));
  b.atom_type = checked_array<int32_t>(get("atom_type"), "atom_type", {b.n_atoms});
  b.occupancy = checked_array<double>(get("occupancy"), "occupancy", {b.n_atoms});
  b.b_iso = checked_array<double>(get("b_iso"), "b_iso", {b.n_atoms});
  b.type_offsets = checked_array<int64_t>(get("type_offsets"), "type_offsets", {n1});
  b.it92 = checked_array<double>(get("it92"), "it92", {-1, 9});
  b.n_types = length(get("it92"));
  b.fp = checked_array<double>(get("fp"), "fp", {b.n_types});
  b.fpp = checked_array<double>(get("fpp"), "fpp", {b.n_types});
  b.neutron_b = checked_array<double>(get("neutron_b"), "neutron_b", {b.n_types});
  b.op_offsets = checked_array<int64_t>(get("op_offsets"), "op_offsets", {n1});
  b.rotations = checked_array<int32_t>(get("rotations"), "rotations", {-1, 3, 3});
  b.n_ops = length(get("rotations"));
  b.translations = checked_array<double>(get("translations"), "translations", {b.n_ops, 3});
  return b;
}

xrdflow::ReflectionOptions reflection_options(double d_min, bool neutron, double max_box, double symprec, int threads) {
  xrdflow::ReflectionOptions opt;
  opt.d_min = d_min;
  opt.neutron = neutron;
  opt.max_box = max_box;
  opt.symprec = symprec;
  opt.threads = threads;
  return opt;
}

xrdflow::RenderOptions render_options(const py::dict& d, int threads) {
  auto get = [&](const char* key) { return dict_item(d, "instrument", key); };
  xrdflow::RenderOptions o;
  o.wavelengths = checked_array<double>(get("wavelengths"), "wavelengths", {-1});
  o.n_lines = static_cast<int>(length(get("wavelengths")));
  o.line_weights = checked_array<double>(get("line_weights"), "line_weights", {o.n_lines});
  o.grid_two_theta = checked_array<double>(get("grid_two_theta"), "grid_two_theta", {-1});
  if (length(get("grid_two_theta")) > 100'000'000) throw py::value_error("grid_two_theta is absurdly long");
  o.n_points = static_cast<int>(length(get("grid_two_theta")));
  o.axis = checked_array<double>(get("axis"), "axis", {o.n_points});
  o.profile = xrdflow::ProfileParams{number(d, "U"),  number(d, "V"),           number(d, "W"),
                                     number(d, "X"),  number(d, "Y"),           number(d, "size_angstrom"),
                                     number(d, "scherrer_k"), number(d, "microstrain")};
  o.zero_shift_deg = number(d, "zero_shift_deg");
  o.cos2_2theta_m = number(d, "cos2_2theta_m");
  const py::object neutron = get("neutron");
  if (!py::isinstance<py::bool_>(neutron)) throw py::type_error("instrument['neutron'] must be a bool");
  o.neutron = neutron.cast<bool>();
  const double normalization = number(d, "normalization");
  if (normalization != 0 && normalization != 1 && normalization != 2)
    throw py::value_error("instrument['normalization'] must be 0 (none), 1 (max) or 2 (area)");
  o.normalization = static_cast<xrdflow::Normalization>(static_cast<int>(normalization));
  o.cutoff_rel = number(d, "cutoff_rel");
  o.threads = threads;
  return o;
}

}  // namespace xrdflow_bind
