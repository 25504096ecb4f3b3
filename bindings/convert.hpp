// Python dicts -> the core's batch descriptions.  The Python layer builds
// these dicts (Simulator._flatten, Simulator._instrument); here every array is
// checked for dtype, layout and shape and every scalar for its type, so wrong
// input raises TypeError/ValueError instead of reaching the core.
#pragma once
#include <pybind11/pybind11.h>

#include "drivers.hpp"

namespace xrdflow_bind {

// d[key], or ValueError "<dict_name> lacks the entry '<key>'".
pybind11::object dict_item(const pybind11::dict& d, const char* dict_name, const char* key);
// d[key] as a double, TypeError unless it is a Python int or float.
double dict_number(const pybind11::dict& d, const char* dict_name, const char* key);

// Keys: lattice, atom_offsets, frac, atom_type, occupancy, b_iso, type_offsets,
// it92, fp, fpp, neutron_b, op_offsets, rotations, translations.
xrdflow::StructureBatch structure_batch(const pybind11::dict& structures);

xrdflow::ReflectionOptions reflection_options(double d_min, bool neutron, double max_box, double symprec, int threads);

// Keys: wavelengths, line_weights, grid_two_theta, axis, U, V, W, X, Y,
// size_angstrom, scherrer_k, microstrain, zero_shift_deg, cos2_2theta_m,
// neutron, normalization (0 none, 1 max, 2 area), cutoff_rel.
xrdflow::RenderOptions render_options(const pybind11::dict& instrument, int threads);

}  // namespace xrdflow_bind
