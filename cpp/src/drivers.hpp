// CPU drivers: validate flat batch inputs, then run the header-only physics
// over many structures on a thread pool.  All batches are CSR-style: the
// per-structure pieces of a flat array are [offsets[i], offsets[i+1]).
#pragma once
#include <cstdint>
#include <vector>

#include "xrdflow/profile.hpp"

namespace xrdflow {

// The crystal content of B structures.
struct StructureBatch {
  int64_t n_structures = 0;
  const double* lattice = nullptr;        // (B, 3, 3) rows a, b, c, angstrom
  const int64_t* atom_offsets = nullptr;  // (B + 1)
  int64_t n_atoms = 0;
  const double* frac = nullptr;           // (n_atoms, 3)
  const int32_t* atom_type = nullptr;     // (n_atoms) index into the structure's own scatterer rows
  const double* occupancy = nullptr;      // (n_atoms)
  const double* b_iso = nullptr;          // (n_atoms) angstrom^2
  const int64_t* type_offsets = nullptr;  // (B + 1)
  int64_t n_types = 0;
  const double* it92 = nullptr;           // (n_types, 9)
  const double* fp = nullptr;             // (n_types) f' (electrons)
  const double* fpp = nullptr;            // (n_types) f'' (electrons)
  const double* neutron_b = nullptr;      // (n_types) fm
  const int64_t* op_offsets = nullptr;    // (B + 1); a structure with no operations gets detected ones
  int64_t n_ops = 0;
  const int32_t* rotations = nullptr;     // (n_ops, 3, 3) in the basis of the given lattice
  const double* translations = nullptr;   // (n_ops, 3) fractional
};

struct ReflectionOptions {
  double d_min = 1.0;            // angstrom
  bool neutron = false;
  double max_box = 5e7;          // refuse a structure whose hkl search box exceeds this many points
  double symprec = 1e-3;         // angstrom; detection tolerance for structures given without operations (<= 0: refuse them)
  // Tolerance on h.t (cycles) in the absence test.  For an operation that fixes h,
  // h.t is a multiple of 1/n (n = order of the operation, or of a pure
  // translation), so real non-absences sit >= 1/24 away for any cell up to a
  // 24-fold supercell; 0.02 absorbs translations known only to ~symprec.
  double absence_tol = 0.02;
  int threads = 0;               // <= 0: all cores
};

// Unique reflections of one structure, sorted by decreasing d.
struct StructureReflections {
  std::vector<int32_t> hkl;           // (R, 3)
  std::vector<double> d;              // (R) angstrom
  std::vector<double> f2;             // (R) Friedel-averaged |F|^2
  std::vector<int32_t> multiplicity;  // (R)
  std::vector<int32_t> laue;          // (L, 3, 3) the Laue group used (rotations on fractional coordinates)
};

// Checks a whole batch (offsets, finite values, cells, the hkl-box cap) before any work.
void validate_structures(const StructureBatch& batch, const ReflectionOptions& opt);
// The reflections of structure s of an already validated batch.
StructureReflections structure_reflections(const StructureBatch& batch, int64_t s, const ReflectionOptions& opt);

// Unique reflections of every structure, sorted by decreasing d.
struct ReflectionTable {
  std::vector<int64_t> offsets;       // (B + 1)
  std::vector<int32_t> hkl;           // (R, 3)
  std::vector<double> d;              // (R) angstrom
  std::vector<double> f2;             // (R) Friedel-averaged |F|^2
  std::vector<int32_t> multiplicity;  // (R)
  std::vector<int64_t> laue_offsets;  // (B + 1)
  std::vector<int32_t> laue;          // (L, 3, 3)
};

ReflectionTable compute_reflections(const StructureBatch& batch, const ReflectionOptions& opt);

// Cached reflections, as produced above (or loaded back from disk).
struct ReflectionView {
  int64_t n_structures = 0;
  const int64_t* offsets = nullptr;
  int64_t n_reflections = 0;
  const double* d = nullptr;
  const double* f2 = nullptr;
  const int32_t* multiplicity = nullptr;
};

enum class Normalization : int { none = 0, max = 1, area = 2 };

struct RenderOptions {
  const double* wavelengths = nullptr;   // (n_lines) angstrom
  const double* line_weights = nullptr;  // (n_lines) relative intensity of each line
  int n_lines = 0;
  const double* grid_two_theta = nullptr;  // (n_points) ascending, degrees: where the pattern is sampled
  const double* axis = nullptr;            // (n_points) ascending output axis (2-theta or Q) for area normalization
  int n_points = 0;
  ProfileParams profile{};
  double zero_shift_deg = 0.0;
  double cos2_2theta_m = 1.0;  // cos^2(2 theta_m); 1 = no monochromator
  bool neutron = false;
  Normalization normalization = Normalization::none;
  double cutoff_rel = 1e-3;
  int threads = 0;
};

void validate_render_options(const RenderOptions& opt);
void validate_reflections(const ReflectionView& refl);
void render_patterns(const ReflectionView& refl, const RenderOptions& opt, float* out /* (B, n_points) */);

// Structures straight to patterns: reflections and render of each structure in
// one task (no intermediate table, one pass over the threads).
void simulate_patterns(const StructureBatch& batch, const ReflectionOptions& ropt, const RenderOptions& opt,
                       float* out /* (B, n_points) */);

// Per-reflection Bragg angle (degrees; negative when unreachable), LP factor and
// intensity M |F|^2 LP at one wavelength.
void peak_intensities(const ReflectionView& refl, double wavelength, double cos2_2theta_m, bool neutron,
                      double* two_theta_deg, double* lp, double* intensity);

}  // namespace xrdflow
