// Space-group operations of a crystal found directly in C++ (host only: it
// allocates).  Same idea as spglib (Togo & Tanaka, arXiv:1808.01590, sec. 3):
// lattice point group from metric-preserving integer matrices, then for each
// rotation the translations that map every site onto a site of the same kind
// within `symprec` angstrom.  Operations are in the basis of the given cell.
#pragma once
#include <vector>

#include "xrdflow/symmetry.hpp"

namespace xrdflow {

struct SpaceGroupOps {
  std::vector<Rotation> rotations;
  std::vector<double> translations;  // 3 per operation, in [0, 1)
};

// Is the set of distinct rotations closed under multiplication (a group)?
// Rotations with entries outside [-64, 64] make it false.
bool rotations_closed(const std::vector<Rotation>& rotations);

// atom_kind[i] identifies chemically identical atoms (same scatterer type,
// occupancy and B); atoms at one position (mixed sites) form one site.
SpaceGroupOps find_space_group_operations(const double* lattice, const double* frac, const int* atom_kind,
                                          int n_atoms, double symprec);

}  // namespace xrdflow
