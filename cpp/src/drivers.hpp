// CPU drivers: validate flat batch inputs, then run the header-only physics
// over many structures on a thread pool.  All batches are CSR-style: the
// per-structure pieces of a flat array are [offsets[i], offsets[i+1]).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "xrdflow/profile.hpp"
#include "xrdflow/render.hpp"

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

// Emission lines and where peaks land: the pieces shared by plain and augmented rendering.
struct Lines {
  const double* wavelengths;  // angstrom
  const double* weights;      // relative intensity of each line
  int n;
};

struct Placement {
  double zero_shift_deg;
  double displacement_mm;  // sample displacement (0: none)
  double radius_mm;        // goniometer radius
};

Grid make_grid(const RenderOptions& opt);
// row = float32(acc / divisor x factor), divisor that of opt.normalization
// (no division for none): normalization, overall scale and conversion in one pass.
void finish_pattern(const RenderOptions& opt, const double* acc, double factor, float* row);
// Largest of x[0..n), n >= 1 (the value of *std::max_element).
double max_value(const double* x, int n);
// Add the peaks of n reflections (d in angstrom, weight = M |F|^2 times any
// per-reflection factor) for every line onto acc.
void accumulate_lines(const Grid& grid, const double* d, const double* weight, int64_t n, const Lines& lines,
                      const ProfileParams& profile, const Placement& place, double cos2_2theta_m, bool neutron,
                      double cutoff_rel, double* acc);

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

// ------------------------------------------------------------ augmentation

// A reflection cache with everything augmentation needs.
struct CacheView {
  ReflectionView refl;
  const int32_t* hkl = nullptr;             // (R, 3)
  const double* lattices = nullptr;         // (B, 3, 3)
  const int64_t* laue_offsets = nullptr;    // (B + 1)
  int64_t n_laue = 0;
  const int32_t* laue_rotations = nullptr;  // (L, 3, 3)
  const double* cell_mass = nullptr;        // (B) daltons
};

// Distributions of the augmentation (see python/xrdflow/augment.py for the
// meaning and defaults of each).  lo == hi means a fixed value.
struct AugmentConfig {
  int n_tubes = 0;                  // > 0: each sample picks one of these tubes
  const double* tubes = nullptr;    // (n_tubes, 2): K-alpha1, K-alpha2 wavelengths (0: single line)
  double kalpha2_probability = 1.0, kalpha2_ratio_lo = 0.5, kalpha2_ratio_hi = 0.5;
  double width_scale_lo = 1.0, width_scale_hi = 1.0;
  double size_nm_lo = 0.0, size_nm_hi = 0.0;  // <= 0: the simulator's own size broadening
  double microstrain_lo = -1.0, microstrain_hi = -1.0;  // < 0: the simulator's own microstrain
  double zero_shift_lo = 0.0, zero_shift_hi = 0.0;
  double displacement_lo = 0.0, displacement_hi = 0.0, radius_mm = 240.0;
  double strain = 0.0;              // max |e_ij| of the random strain tensor
  double po_probability = 0.0, po_r_lo = 1.0, po_r_hi = 1.0;
  int po_direction[3] = {0, 0, 1};
  bool po_random_direction = true;
  double b_extra_lo = 0.0, b_extra_hi = 0.0;
  double mixture_probability = 0.0;
  int max_phases = 1;
  double background_probability = 0.0, background_lo = 0.0, background_hi = 0.0;
  int chebyshev_order = 4;
  double hump_probability = 0.0, hump_center_lo = 20.0, hump_center_hi = 30.0;
  double hump_fwhm_lo = 8.0, hump_fwhm_hi = 12.0, hump_lo = 0.0, hump_hi = 0.0;
  double noise_probability = 0.0, counts_lo = 1e4, counts_hi = 1e4, read_noise_lo = 0.0, read_noise_hi = 0.0;
  double scale_lo = 1.0, scale_hi = 1.0;
};

// The per-point counting noise of an augmented pattern on its own: out[i] =
// Poisson(lam[i]) + N(0, read^2), drawn exactly as render_augmented draws the
// noise of sample `index` (for statistical tests of that path).
void pattern_counting_noise(uint64_t seed, uint64_t epoch, uint64_t index, const double* lam, int n, double read,
                            double* out);

// Poisson(lam[i]) by inversion of u[i], through the vectorized lanes of the
// pattern path (lanes = true) or the scalar poisson_inverse; the two must agree.
void poisson_by_inversion(const double* lam, const double* u, int64_t n, bool lanes, double* out);

// Words of the Philox blocks first .. first + n_blocks - 1 of the stream keyed
// by (seed, epoch, index), four per block, as the pattern noise draws them:
// through the vector path the CPU selects (portable = false) or the portable
// loop (portable = true); the two must agree.
void philox_stream_words(uint64_t seed, uint64_t epoch, uint64_t index, uint32_t first, int n_blocks, bool portable,
                         uint32_t* out);

// Names of the per-sample parameters written by render_augmented, in order.
const std::vector<std::string>& augment_parameter_names();

void validate_augment(const CacheView& cache, const AugmentConfig& cfg);

// Patterns of the cached structures `indices` (n of them), each with its own
// draws keyed by (seed, epoch, indices[i]); params is (n, names().size()).
void render_augmented(const CacheView& cache, const int64_t* indices, int64_t n, const AugmentConfig& cfg,
                      const RenderOptions& base, uint64_t seed, uint64_t epoch, float* out, double* params);

}  // namespace xrdflow
