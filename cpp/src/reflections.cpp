// Driver for the expensive, once-per-structure stage: unique reflections,
// multiplicities and |F|^2.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "drivers.hpp"
#include "fail.hpp"
#include "parallel.hpp"
#include "symmetry_search.hpp"
#include "xrdflow/lattice.hpp"
#include "xrdflow/reflections.hpp"
#include "xrdflow/scattering.hpp"
#include "xrdflow/structure_factor.hpp"
#include "xrdflow/symmetry.hpp"

namespace xrdflow {
namespace {

// The largest Laue group (m-3m) has 48 operations.
constexpr int kMaxLaueOps = 48;

void check_offsets(const int64_t* offsets, int64_t n_structures, int64_t total, const char* what) {
  if (offsets[0] != 0) fail(what, " offsets must start at 0, got ", offsets[0]);
  for (int64_t i = 0; i < n_structures; ++i)
    if (offsets[i + 1] < offsets[i])
      fail(what, " offsets must be non-decreasing; structure ", i, " has ", offsets[i], " > ", offsets[i + 1]);
  if (offsets[n_structures] != total)
    fail(what, " offsets end at ", offsets[n_structures], " but ", total, " rows were given");
}

void check_finite(const double* x, int64_t n, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) fail(what, " contains a non-finite value (NaN or inf) at flat index ", i);
}

Rotation negate(const Rotation& r) {
  Rotation n;
  for (int i = 0; i < 9; ++i) n.m[i] = -r.m[i];
  return n;
}

// Laue group = distinct rotations of the space group together with their
// negatives (Friedel).  Operations given by the caller are checked for
// closure so that orbit sizes are exact; detected ones already were.
std::vector<Rotation> laue_group(const int32_t* rot, int64_t n_ops, int64_t structure, bool check_closure) {
  std::vector<Rotation> group;
  std::vector<unsigned long long> keys;  // sorted keys of `group`
  auto add = [&](const Rotation& r) {
    const unsigned long long key = rotation_key(r);
    const auto it = std::lower_bound(keys.begin(), keys.end(), key);
    if (it != keys.end() && *it == key) return;
    keys.insert(it, key);
    group.push_back(r);
  };
  for (int64_t i = 0; i < n_ops; ++i) {
    Rotation r;
    std::copy(rot + 9 * i, rot + 9 * i + 9, r.m);
    // Integer rotations in any reasonable basis have small entries; the bound
    // also keeps R^T h far from int overflow and the keys unique.
    if (!small_entries(r))
      fail("structure ", structure, ": symmetry operation ", i, " has a rotation entry outside [-64, 64]; ",
           "reduce the cell (e.g. Niggli) before simulating");
    const int det = determinant(r);
    if (det != 1 && det != -1)
      fail("structure ", structure, ": symmetry operation ", i, " has a rotation with determinant ", det,
           " (must be +1 or -1)");
    add(r);
    add(negate(r));
    if (group.size() > static_cast<size_t>(kMaxLaueOps))
      fail("structure ", structure, ": more than ", kMaxLaueOps,
           " distinct point operations; these are not the operations of a crystallographic space group");
  }
  if (check_closure && !rotations_closed(group))
    fail("structure ", structure, ": the symmetry rotations do not form a group (product not closed)");
  return group;
}

}  // namespace

void validate_structures(const StructureBatch& b, const ReflectionOptions& opt) {
  if (b.n_structures < 0) fail("negative number of structures");
  if (!(opt.d_min > 0.0) || !std::isfinite(opt.d_min)) fail("d_min must be a positive finite number of angstrom, got ", opt.d_min);
  if (!std::isfinite(opt.symprec) || opt.symprec >= 1.0) fail("symprec must be below 1 angstrom, got ", opt.symprec);
  check_offsets(b.atom_offsets, b.n_structures, b.n_atoms, "atom");
  check_offsets(b.type_offsets, b.n_structures, b.n_types, "scatterer type");
  check_offsets(b.op_offsets, b.n_structures, b.n_ops, "symmetry operation");
  check_finite(b.lattice, 9 * b.n_structures, "lattice");
  check_finite(b.frac, 3 * b.n_atoms, "fractional coordinates");
  check_finite(b.occupancy, b.n_atoms, "occupancy");
  check_finite(b.b_iso, b.n_atoms, "B_iso");
  check_finite(b.it92, kIT92Coefs * b.n_types, "IT92 coefficients");
  check_finite(b.fp, b.n_types, "f'");
  check_finite(b.fpp, b.n_types, "f''");
  check_finite(b.neutron_b, b.n_types, "neutron scattering length");
  check_finite(b.translations, 3 * b.n_ops, "symmetry translations");
  for (int64_t s = 0; s < b.n_structures; ++s) {
    const Metric g = direct_metric(b.lattice + 9 * s);
    const double v2 = metric_determinant(g);
    if (!(v2 > 1e-12 * g.g11 * g.g22 * g.g33) || !(v2 > 0.0))
      fail("structure ", s, ": lattice is degenerate (cell volume ~ 0); give three independent lattice vectors");
    if (b.op_offsets[s + 1] == b.op_offsets[s] && !(opt.symprec > 0.0))
      fail("structure ", s, ": no symmetry operations and symprec <= 0; give operations or a detection tolerance");
    const int64_t n_types = b.type_offsets[s + 1] - b.type_offsets[s];
    for (int64_t j = b.atom_offsets[s]; j < b.atom_offsets[s + 1]; ++j) {
      if (b.atom_type[j] < 0 || b.atom_type[j] >= n_types)
        fail("structure ", s, ": atom ", j - b.atom_offsets[s], " has scatterer type ", b.atom_type[j],
             " outside [0, ", n_types, ")");
      if (b.occupancy[j] < 0.0 || b.occupancy[j] > 1.0 + 1e-6)
        fail("structure ", s, ": occupancy ", b.occupancy[j], " outside [0, 1]");
      if (b.b_iso[j] < 0.0) fail("structure ", s, ": negative B_iso ", b.b_iso[j]);
    }
    const Miller box = hkl_bounds(g, opt.d_min);
    const double box_points = (2.0 * box.h + 1.0) * (2.0 * box.k + 1.0) * (2.0 * box.l + 1.0);
    if (box_points > opt.max_box)
      fail("structure ", s, ": the hkl search box (", 2 * box.h + 1, " x ", 2 * box.k + 1, " x ", 2 * box.l + 1,
           " = ", box_points, " points) exceeds the cap of ", opt.max_box,
           " points; use a larger d_min (smaller 2-theta range or shorter wavelength) or raise max_reflections");
  }
}

namespace {

// Atoms scatter identically when they share scatterer type, occupancy and B
// exactly; for symmetry detection, kinds whose occupancy and B agree within
// 1e-4 and 1e-3 A^2 count as one (values rounded in a file must not break symmetry).
struct AtomKinds {
  std::vector<int> of_atom;  // kind of each atom of the structure
  std::vector<int> type;     // per kind: scatterer type, occupancy, B
  std::vector<double> occupancy, b_iso;
};

AtomKinds atom_kinds(const StructureBatch& b, int64_t s) {
  const int64_t a0 = b.atom_offsets[s], n = b.atom_offsets[s + 1] - a0;
  AtomKinds k;
  k.of_atom.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ai = a0 + i;
    size_t j = 0;
    for (; j < k.type.size(); ++j)
      if (k.type[j] == b.atom_type[ai] && k.occupancy[j] == b.occupancy[ai] && k.b_iso[j] == b.b_iso[ai]) break;
    if (j == k.type.size()) {
      k.type.push_back(b.atom_type[ai]);
      k.occupancy.push_back(b.occupancy[ai]);
      k.b_iso.push_back(b.b_iso[ai]);
    }
    k.of_atom[i] = static_cast<int>(j);
  }
  return k;
}

// Given operations, or detected ones when the structure came without any.
SpaceGroupOps structure_operations(const StructureBatch& b, int64_t s, const ReflectionOptions& opt,
                                   const AtomKinds& kinds) {
  const int64_t op0 = b.op_offsets[s], n_ops = b.op_offsets[s + 1] - op0;
  if (n_ops == 0) {
    std::vector<int> class_of_kind(kinds.type.size());
    for (size_t i = 0; i < kinds.type.size(); ++i) {
      size_t j = 0;
      while (j < i && !(kinds.type[j] == kinds.type[i] && std::fabs(kinds.occupancy[j] - kinds.occupancy[i]) < 1e-4 &&
                        std::fabs(kinds.b_iso[j] - kinds.b_iso[i]) < 1e-3))
        ++j;
      class_of_kind[i] = j < i ? class_of_kind[j] : static_cast<int>(i);
    }
    std::vector<int> atom_class(kinds.of_atom.size());
    for (size_t a = 0; a < atom_class.size(); ++a) atom_class[a] = class_of_kind[kinds.of_atom[a]];
    const int64_t a0 = b.atom_offsets[s];
    return find_space_group_operations(b.lattice + 9 * s, b.frac + 3 * a0, atom_class.data(),
                                       static_cast<int>(atom_class.size()), opt.symprec);
  }
  SpaceGroupOps ops;
  ops.rotations.resize(n_ops);
  for (int64_t i = 0; i < n_ops; ++i)
    for (int k = 0; k < 9; ++k) ops.rotations[i].m[k] = b.rotations[9 * (op0 + i) + k];
  ops.translations.assign(b.translations + 3 * op0, b.translations + 3 * (op0 + n_ops));
  return ops;
}

// Per-atom phase tables exp(2 pi i n x) for |n| <= box along each axis.
struct PhaseStorage {
  std::vector<double> cos[3], sin[3];
  PhaseTables view{};
};

// Tables above this many doubles (all axes, cos + sin) are not built; the
// direct sum is used instead (very large cells at high resolution).
constexpr size_t kMaxPhaseTable = size_t(1) << 22;

bool build_phase_tables(const double* frac, int n_atoms, Miller box, PhaseStorage& st) {
  const int n_max[3] = {box.h, box.k, box.l};
  size_t total = 0;
  for (int ax = 0; ax < 3; ++ax) total += 2 * size_t(n_atoms) * (2 * n_max[ax] + 1);
  if (total > kMaxPhaseTable) return false;
  // exp(2 pi i n x) by the recurrence e(n+1) = e(n) e(1), re-anchored with a
  // direct cos/sin every kAnchor steps so rounding cannot accumulate beyond
  // ~kAnchor ulps; negative n are complex conjugates.
  constexpr int kAnchor = 8;
  for (int ax = 0; ax < 3; ++ax) {
    const int nm = n_max[ax], width = 2 * nm + 1;
    st.cos[ax].resize(size_t(n_atoms) * width);
    st.sin[ax].resize(size_t(n_atoms) * width);
    for (int j = 0; j < n_atoms; ++j) {
      double* c = st.cos[ax].data() + size_t(j) * width + nm;  // c[n] for n in [-nm, nm]
      double* sn = st.sin[ax].data() + size_t(j) * width + nm;
      const double x = frac[3 * j + ax];
      const double c1 = std::cos(kTwoPi * x), s1 = std::sin(kTwoPi * x);
      for (int n = 0; n <= nm; ++n) {
        if (n % kAnchor == 0) {
          double phase = n * x;
          phase -= std::floor(phase);
          c[n] = std::cos(kTwoPi * phase);
          sn[n] = std::sin(kTwoPi * phase);
        } else {
          c[n] = c[n - 1] * c1 - sn[n - 1] * s1;
          sn[n] = sn[n - 1] * c1 + c[n - 1] * s1;
        }
        c[-n] = c[n];
        sn[-n] = -sn[n];
      }
    }
    st.view.axis[ax] = PhaseAxis{st.cos[ax].data(), st.sin[ax].data(), nm};
  }
  return true;
}

}  // namespace

StructureReflections structure_reflections(const StructureBatch& b, int64_t s, const ReflectionOptions& opt) {
  const AtomKinds kinds = atom_kinds(b, s);
  const SpaceGroupOps sg = structure_operations(b, s, opt, kinds);
  const int64_t n_all = static_cast<int64_t>(sg.rotations.size());
  std::vector<int32_t> flat_rot(9 * n_all);
  for (int64_t i = 0; i < n_all; ++i) std::copy(sg.rotations[i].m, sg.rotations[i].m + 9, flat_rot.begin() + 9 * i);
  const bool detected = b.op_offsets[s + 1] == b.op_offsets[s];
  const std::vector<Rotation> laue = laue_group(flat_rot.data(), n_all, s, !detected);
  // For absences it suffices to keep every pure translation (identity
  // rotation) and one translation per other rotation: the translations of a
  // rotation differ by pure translations, which h must already be integral on.
  std::vector<Rotation> ops;
  std::vector<double> absence_trans;
  {
    std::vector<unsigned long long> seen;
    const unsigned long long identity = rotation_key(Rotation{{1, 0, 0, 0, 1, 0, 0, 0, 1}});
    for (int64_t i = 0; i < n_all; ++i) {
      const unsigned long long key = rotation_key(sg.rotations[i]);
      if (key != identity && std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
      seen.push_back(key);
      ops.push_back(sg.rotations[i]);
      absence_trans.insert(absence_trans.end(), sg.translations.begin() + 3 * i, sg.translations.begin() + 3 * i + 3);
    }
  }
  const double* trans = absence_trans.data();
  const int64_t n_ops = static_cast<int64_t>(ops.size());

  const Metric g = direct_metric(b.lattice + 9 * s);
  const Metric gs = symmetrized_metric(reciprocal_metric(g), laue.data(), static_cast<int>(laue.size()));
  // One extra index per axis: the symmetrized metric may move a reflection
  // across the box edge by a rounding-sized amount.
  Miller box = hkl_bounds(g, opt.d_min);
  box = Miller{box.h + 1, box.k + 1, box.l + 1};
  const double inv_d2_max = 1.0 / (opt.d_min * opt.d_min);

  const int64_t a0 = b.atom_offsets[s], t0 = b.type_offsets[s];
  const int n_atoms = static_cast<int>(b.atom_offsets[s + 1] - a0);
  const double* frac = b.frac + 3 * a0;
  const ScatterersView sc{b.it92 + kIT92Coefs * t0, b.fp + t0, b.fpp + t0, b.neutron_b + t0,
                          static_cast<int>(b.type_offsets[s + 1] - t0), opt.neutron};
  const KindsView kv{kinds.type.data(), kinds.occupancy.data(), kinds.b_iso.data(),
                     static_cast<int>(kinds.type.size())};
  std::vector<double> f_real(sc.n_types), f_imag(sc.n_types), w_real(kv.n_kinds), w_imag(kv.n_kinds);
  PhaseStorage tables;
  const bool tabulated = build_phase_tables(frac, n_atoms, box, tables);

  StructureReflections out;
  // Canonical representatives are the lexicographically largest members of
  // their orbits and -1 is in every Laue group, so only the half-space
  // (h, k, l) > (0, 0, 0) needs visiting.  For each (h, k) the l-range comes
  // from the sphere |h|^2 <= 1/d_min^2 (a quadratic in l) instead of the box.
  for (int h = 0; h <= box.h; ++h)
    for (int k = (h == 0 ? 0 : -box.k); k <= box.k; ++k) {
      const double qa = gs.g33;
      const double qb = h * gs.g13 + k * gs.g23;
      const double qc = h * h * gs.g11 + k * k * gs.g22 + 2.0 * h * k * gs.g12 - inv_d2_max;
      const double disc = qb * qb - qa * qc;
      if (disc < 0.0) continue;
      const double root = std::sqrt(disc);
      int l_lo = std::max(-box.l, static_cast<int>(std::floor((-qb - root) / qa)) - 1);
      const int l_hi = std::min(box.l, static_cast<int>(std::ceil((-qb + root) / qa)) + 1);
      if (h == 0 && k == 0) l_lo = std::max(l_lo, 1);
      for (int l = l_lo; l <= l_hi; ++l) {
        const Miller m{h, k, l};
        const double q2 = inv_d2(gs, m);  // 1/d^2
        if (q2 > inv_d2_max) continue;
        int mult = 0;
        if (!canonical_in_orbit(m, laue.data(), static_cast<int>(laue.size()), &mult)) continue;
        if (systematically_absent(m, ops.data(), trans, static_cast<int>(n_ops), opt.absence_tol)) continue;
        const double stol2 = 0.25 * q2;  // (sin(theta)/lambda)^2 = 1 / (4 d^2)
        scattering_factors(sc, stol2, f_real.data(), f_imag.data());
        kind_weights(kv, stol2, f_real.data(), f_imag.data(), w_real.data(), w_imag.data());
        out.hkl.insert(out.hkl.end(), {h, k, l});
        out.d.push_back(1.0 / std::sqrt(q2));
        out.f2.push_back(tabulated ? structure_factor_f2_tabulated(m, tables.view, kinds.of_atom.data(), n_atoms,
                                                                    w_real.data(), w_imag.data())
                                   : structure_factor_f2_direct(m, frac, kinds.of_atom.data(), n_atoms,
                                                                w_real.data(), w_imag.data()));
        out.multiplicity.push_back(mult);
      }
    }
  // Sort by decreasing d (increasing 2-theta), ties by hkl, for reproducible tables.
  std::vector<size_t> order(out.d.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t i, size_t j) {
    if (out.d[i] != out.d[j]) return out.d[i] > out.d[j];
    return std::lexicographical_compare(out.hkl.begin() + 3 * j, out.hkl.begin() + 3 * j + 3,
                                        out.hkl.begin() + 3 * i, out.hkl.begin() + 3 * i + 3);
  });
  StructureReflections sorted;
  for (const Rotation& r : laue) sorted.laue.insert(sorted.laue.end(), r.m, r.m + 9);
  sorted.hkl.reserve(out.hkl.size());
  for (size_t i : order) {
    sorted.hkl.insert(sorted.hkl.end(), out.hkl.begin() + 3 * i, out.hkl.begin() + 3 * i + 3);
    sorted.d.push_back(out.d[i]);
    sorted.f2.push_back(out.f2[i]);
    sorted.multiplicity.push_back(out.multiplicity[i]);
  }
  return sorted;
}

ReflectionTable compute_reflections(const StructureBatch& batch, const ReflectionOptions& opt) {
  validate_structures(batch, opt);
  std::vector<StructureReflections> per(batch.n_structures);
  parallel_for(batch.n_structures, opt.threads, [&](int64_t s) { per[s] = structure_reflections(batch, s, opt); });

  ReflectionTable t;
  t.offsets.assign(batch.n_structures + 1, 0);
  t.laue_offsets.assign(batch.n_structures + 1, 0);
  for (int64_t s = 0; s < batch.n_structures; ++s) {
    t.offsets[s + 1] = t.offsets[s] + per[s].d.size();
    t.laue_offsets[s + 1] = t.laue_offsets[s] + per[s].laue.size() / 9;
  }
  const size_t n = t.offsets.back();
  t.hkl.reserve(3 * n);
  t.d.reserve(n);
  t.f2.reserve(n);
  t.multiplicity.reserve(n);
  for (auto& p : per) {
    t.hkl.insert(t.hkl.end(), p.hkl.begin(), p.hkl.end());
    t.d.insert(t.d.end(), p.d.begin(), p.d.end());
    t.f2.insert(t.f2.end(), p.f2.begin(), p.f2.end());
    t.multiplicity.insert(t.multiplicity.end(), p.multiplicity.begin(), p.multiplicity.end());
    t.laue.insert(t.laue.end(), p.laue.begin(), p.laue.end());
    p = StructureReflections{};  // release as we go to keep peak memory near one copy
  }
  return t;
}

}  // namespace xrdflow
