#include "symmetry_search.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>

#include "xrdflow/lattice.hpp"

namespace xrdflow {
namespace {

// Largest integer coefficient searched when looking for the image of a basis
// vector; enough for any cell that is not absurdly far from reduced.
constexpr int kMaxCoefficient = 6;

// Nearest integer without a libm call (inputs here are small fractional
// differences; baseline x86-64 has no inline rounding instruction).
inline double round_small(double x) { return static_cast<double>(static_cast<long long>(x + (x >= 0.0 ? 0.5 : -0.5))); }

struct Site {
  double x[3];
  int kind;
};

double dist2_min_image(const Metric& g, const double* a, const double* b) {
  double d[3];
  for (int i = 0; i < 3; ++i) {
    d[i] = a[i] - b[i];
    d[i] -= round_small(d[i]);
  }
  return d[0] * d[0] * g.g11 + d[1] * d[1] * g.g22 + d[2] * d[2] * g.g33 +
         2.0 * (d[0] * d[1] * g.g12 + d[0] * d[2] * g.g13 + d[1] * d[2] * g.g23);
}

double dot(const Metric& g, const int* u, const int* v) {
  return u[0] * v[0] * g.g11 + u[1] * v[1] * g.g22 + u[2] * v[2] * g.g33 +
         (u[0] * v[1] + u[1] * v[0]) * g.g12 + (u[0] * v[2] + u[2] * v[0]) * g.g13 +
         (u[1] * v[2] + u[2] * v[1]) * g.g23;
}

// Merge atoms closer than `tol` angstrom into sites; a site's kind is the
// multiset of atom kinds it holds, numbered consistently across sites.
std::vector<Site> make_sites(const Metric& g, const double* frac, const int* kind, int n, double tol) {
  std::vector<int> site_of(n, -1);
  std::vector<std::vector<int>> members;
  for (int i = 0; i < n; ++i) {
    if (site_of[i] >= 0) continue;
    site_of[i] = static_cast<int>(members.size());
    members.push_back({kind[i]});
    for (int j = i + 1; j < n; ++j)
      if (site_of[j] < 0 && dist2_min_image(g, frac + 3 * i, frac + 3 * j) < tol * tol) {
        site_of[j] = site_of[i];
        members.back().push_back(kind[j]);
      }
  }
  std::vector<std::vector<int>> kinds;  // distinct sorted member lists
  std::vector<Site> sites;
  for (size_t s = 0; s < members.size(); ++s) {
    std::sort(members[s].begin(), members[s].end());
    auto it = std::find(kinds.begin(), kinds.end(), members[s]);
    const int k = static_cast<int>(it - kinds.begin());
    if (it == kinds.end()) kinds.push_back(members[s]);
    const int first = static_cast<int>(std::find(site_of.begin(), site_of.end(), static_cast<int>(s)) - site_of.begin());
    sites.push_back(Site{{frac[3 * first], frac[3 * first + 1], frac[3 * first + 2]}, k});
  }
  return sites;
}

// Sites bucketed by a coarse voxel of their fractional coordinates, so the
// sites within `reach` angstrom of a point are found among its 27 neighbour
// voxels instead of by scanning every site (large cells and supercells).
class SiteIndex {
 public:
  SiteIndex(const Metric& g, const std::vector<Site>& sites, double reach) : sites_(sites) {
    const Metric gs = reciprocal_metric(g);
    const double rl[3] = {std::sqrt(gs.g11), std::sqrt(gs.g22), std::sqrt(gs.g33)};
    // A displacement of `reach` changes fractional coordinate i by at most
    // reach |a*_i|; voxels at least that wide make 27 neighbours enough.
    // Small cells: one voxel, i.e. a plain scan, is cheaper than the lookups.
    const bool small = sites.size() <= 48;
    for (int i = 0; i < 3; ++i)
      m_[i] = small ? 1 : std::max(1, std::min(64, static_cast<int>(1.0 / (reach * rl[i]))));
    // No more voxels than ~4 per site.
    while (static_cast<size_t>(m_[0]) * m_[1] * m_[2] > 4 * sites.size() + 8) {
      int* largest = std::max_element(m_, m_ + 3);
      *largest = std::max(1, *largest / 2);
    }
    const size_t n_vox = static_cast<size_t>(m_[0]) * m_[1] * m_[2];
    start_.assign(n_vox + 1, 0);
    std::vector<size_t> vox(sites.size());
    for (size_t i = 0; i < sites.size(); ++i) {
      int c[3];
      cell_of(sites[i].x, c);
      vox[i] = index(c[0], c[1], c[2]);
      ++start_[vox[i] + 1];
    }
    for (size_t v = 0; v < n_vox; ++v) start_[v + 1] += start_[v];
    members_.resize(sites.size());
    std::vector<size_t> fill(start_.begin(), start_.end() - 1);
    for (size_t i = 0; i < sites.size(); ++i) members_[fill[vox[i]]++] = static_cast<int>(i);
  }

  // Calls accept(j) for sites j of `kind` in the voxels around y until it returns true.
  template <typename Accept>
  bool find(const double* y, int kind, Accept&& accept) const {
    int c[3];
    cell_of(y, c);
    int lists[3][3], count[3];
    for (int a = 0; a < 3; ++a) {
      count[a] = std::min(3, m_[a]);
      for (int k = 0; k < count[a]; ++k)
        lists[a][k] = m_[a] <= 3 ? k : ((c[a] + k - 1) % m_[a] + m_[a]) % m_[a];
    }
    for (int i = 0; i < count[0]; ++i)
      for (int j = 0; j < count[1]; ++j)
        for (int k = 0; k < count[2]; ++k) {
          const size_t v = index(lists[0][i], lists[1][j], lists[2][k]);
          for (size_t p = start_[v]; p < start_[v + 1]; ++p) {
            const int site = members_[p];
            if (sites_[site].kind == kind && accept(site)) return true;
          }
        }
    return false;
  }

 private:
  void cell_of(const double* x, int* c) const {
    for (int a = 0; a < 3; ++a) {
      const double f = x[a] - std::floor(x[a]);
      c[a] = std::min(m_[a] - 1, static_cast<int>(f * m_[a]));
    }
  }
  size_t index(int i, int j, int k) const { return (static_cast<size_t>(i) * m_[1] + j) * m_[2] + k; }

  const std::vector<Site>& sites_;
  int m_[3];
  std::vector<size_t> start_;
  std::vector<int> members_;
};

// Integer matrices W (columns = images of a, b, c) with W^T G W = G within tolerance.
std::vector<Rotation> lattice_point_group(const Metric& g, double symprec) {
  const double len[3] = {std::sqrt(g.g11), std::sqrt(g.g22), std::sqrt(g.g33)};
  const Metric gs = reciprocal_metric(g);
  const double rlen[3] = {std::sqrt(gs.g11), std::sqrt(gs.g22), std::sqrt(gs.g33)};
  const double gm[3][3] = {{g.g11, g.g12, g.g13}, {g.g12, g.g22, g.g23}, {g.g13, g.g23, g.g33}};
  std::vector<std::array<int, 3>> cand[3];
  for (int j = 0; j < 3; ++j) {
    int bound[3];
    for (int i = 0; i < 3; ++i) bound[i] = std::min(kMaxCoefficient, static_cast<int>(std::ceil(len[j] * rlen[i] + 1e-9)));
    for (int a = -bound[0]; a <= bound[0]; ++a)
      for (int b = -bound[1]; b <= bound[1]; ++b)
        for (int c = -bound[2]; c <= bound[2]; ++c) {
          const int n[3] = {a, b, c};
          const double l = std::sqrt(std::max(0.0, dot(g, n, n)));
          if (std::fabs(l - len[j]) <= symprec) cand[j].push_back({a, b, c});
        }
  }
  std::vector<Rotation> out;
  for (const auto& u : cand[0])
    for (const auto& v : cand[1]) {
      if (std::fabs(dot(g, u.data(), v.data()) - gm[0][1]) > symprec * (len[0] + len[1])) continue;
      for (const auto& w : cand[2]) {
        if (std::fabs(dot(g, u.data(), w.data()) - gm[0][2]) > symprec * (len[0] + len[2])) continue;
        if (std::fabs(dot(g, v.data(), w.data()) - gm[1][2]) > symprec * (len[1] + len[2])) continue;
        Rotation r{{u[0], v[0], w[0], u[1], v[1], w[1], u[2], v[2], w[2]}};
        const int det = determinant(r);
        if (det == 1 || det == -1) out.push_back(r);
      }
    }
  return out;
}

void apply(const Rotation& r, const double* x, double* y) {
  for (int i = 0; i < 3; ++i) y[i] = r.m[3 * i] * x[0] + r.m[3 * i + 1] * x[1] + r.m[3 * i + 2] * x[2];
}

// Does x -> image(x) + t send every site onto a site of its own kind within
// tol?  On success `refined` is t corrected by the mean residual and
// *max_dist2 the largest squared distance seen (if given).
bool maps_all_sites(const Metric& g, const std::vector<Site>& sites, const SiteIndex& index,
                    const std::vector<double>& image, const double* t, double tol, double* refined,
                    double* max_dist2 = nullptr) {
  double shift[3] = {0.0, 0.0, 0.0};
  double worst = 0.0;
  for (size_t i = 0; i < sites.size(); ++i) {
    const double y[3] = {image[3 * i] + t[0], image[3 * i + 1] + t[1], image[3 * i + 2] + t[2]};
    const bool found = index.find(y, sites[i].kind, [&](int j) {
      const double d2 = dist2_min_image(g, y, sites[j].x);
      if (d2 > tol * tol) return false;
      worst = std::max(worst, d2);
      for (int k = 0; k < 3; ++k) {
        const double d = sites[j].x[k] - y[k];
        shift[k] += d - round_small(d);
      }
      return true;
    });
    if (!found) return false;
  }
  for (int k = 0; k < 3; ++k) refined[k] = t[k] + shift[k] / static_cast<double>(sites.size());
  if (max_dist2) *max_dist2 = worst;
  return true;
}

// An operation is accepted when every site lies within symprec of its image,
// either under the trial translation or under the mean-residual one (the
// trial inherits the reference site's own deviation).
bool accept_translation(const Metric& g, const std::vector<Site>& sites, const SiteIndex& index,
                        const std::vector<double>& image, const double* trial, double symprec, double* refined) {
  double worst2 = 0.0, unused[3];
  if (!maps_all_sites(g, sites, index, image, trial, 2.0 * symprec, refined, &worst2)) return false;
  return worst2 <= symprec * symprec || maps_all_sites(g, sites, index, image, refined, symprec, unused);
}

// Translations t (fractional, in [0,1)) such that x -> x + t maps the crystal
// onto itself: the lattice points of the primitive cell inside this cell.
std::vector<std::array<double, 3>> pure_translations(const Metric& g, const std::vector<Site>& sites,
                                                     const SiteIndex& index, int ref, double symprec) {
  std::vector<double> image(3 * sites.size());
  for (size_t i = 0; i < sites.size(); ++i) std::copy(sites[i].x, sites[i].x + 3, &image[3 * i]);
  std::vector<std::array<double, 3>> out;
  for (const auto& target : sites) {
    if (target.kind != sites[ref].kind) continue;
    const double t[3] = {target.x[0] - sites[ref].x[0], target.x[1] - sites[ref].x[1], target.x[2] - sites[ref].x[2]};
    double refined[3];
    if (!accept_translation(g, sites, index, image, t, symprec, refined)) continue;
    out.push_back({refined[0] - std::floor(refined[0]), refined[1] - std::floor(refined[1]),
                   refined[2] - std::floor(refined[2])});
  }
  return out;
}

double det3(const double* a, const double* b, const double* c) {
  return a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0]) + a[2] * (b[0] * c[1] - b[1] * c[0]);
}

// The lattice point group must be judged on the primitive lattice: in a
// supercell a small strain of the primitive cell grows with the cell edges and
// would exceed symprec on the long vectors.  With n pure translations, pick
// the three shortest independent lattice vectors spanning a cell of volume
// 1/n (fractional units), find the point group of that primitive metric, and
// express each operation back in the basis of the given cell.
std::vector<Rotation> point_group_via_primitive(const Metric& g, const std::vector<std::array<double, 3>>& pure,
                                                double symprec) {
  const double target = 1.0 / static_cast<double>(pure.size());
  std::vector<std::pair<double, std::array<double, 3>>> cand;
  for (const auto& t : pure)
    for (int a = -1; a <= 1; ++a)
      for (int b = -1; b <= 1; ++b)
        for (int c = -1; c <= 1; ++c) {
          const std::array<double, 3> v{t[0] + a, t[1] + b, t[2] + c};
          const double l2 = v[0] * v[0] * g.g11 + v[1] * v[1] * g.g22 + v[2] * v[2] * g.g33 +
                            2.0 * (v[0] * v[1] * g.g12 + v[0] * v[2] * g.g13 + v[1] * v[2] * g.g23);
          if (l2 > 1e-12) cand.push_back({l2, v});
        }
  std::sort(cand.begin(), cand.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  const size_t n = std::min<size_t>(cand.size(), 40);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j)
      for (size_t k = j + 1; k < n; ++k) {
        const double* v1 = cand[i].second.data();
        const double* v2 = cand[j].second.data();
        const double* v3 = cand[k].second.data();
        const double det = det3(v1, v2, v3);  // P has columns v1, v2, v3
        if (std::fabs(std::fabs(det) - target) > 1e-3 * target) continue;
        // Primitive metric G' = P^T G P.
        const double gm[3][3] = {{g.g11, g.g12, g.g13}, {g.g12, g.g22, g.g23}, {g.g13, g.g23, g.g33}};
        const double* cols[3] = {v1, v2, v3};
        double gp[3][3];
        for (int r = 0; r < 3; ++r)
          for (int q = 0; q < 3; ++q) {
            double sum = 0.0;
            for (int u = 0; u < 3; ++u)
              for (int w = 0; w < 3; ++w) sum += cols[r][u] * gm[u][w] * cols[q][w];
            gp[r][q] = sum;
          }
        const Metric gprim{gp[0][0], gp[1][1], gp[2][2], gp[0][1], gp[0][2], gp[1][2]};
        // P^-1 by the adjugate.
        double pm[3][3], pinv[3][3];
        for (int r = 0; r < 3; ++r)
          for (int q = 0; q < 3; ++q) pm[r][q] = cols[q][r];
        for (int r = 0; r < 3; ++r)
          for (int q = 0; q < 3; ++q) {
            const int r1 = (q + 1) % 3, r2 = (q + 2) % 3, q1 = (r + 1) % 3, q2 = (r + 2) % 3;
            pinv[r][q] = (pm[r1][q1] * pm[r2][q2] - pm[r1][q2] * pm[r2][q1]) / det;
          }
        std::vector<Rotation> out;
        for (const Rotation& wp : lattice_point_group(gprim, symprec)) {
          // W = P W' P^-1 must be an integer matrix (it maps the given lattice onto itself).
          Rotation w;
          bool integral = true;
          for (int r = 0; r < 3 && integral; ++r)
            for (int q = 0; q < 3 && integral; ++q) {
              double sum = 0.0;
              for (int u = 0; u < 3; ++u)
                for (int v = 0; v < 3; ++v) sum += pm[r][u] * wp.m[3 * u + v] * pinv[v][q];
              const double rounded = std::nearbyint(sum);
              integral = std::fabs(sum - rounded) < 1e-3;
              w.m[3 * r + q] = static_cast<int>(rounded);
            }
          if (integral) out.push_back(w);
        }
        return out;
      }
  return lattice_point_group(g, symprec);  // no primitive basis found: judge the given cell
}

SpaceGroupOps search(const Metric& g, const std::vector<Site>& sites, double symprec) {
  SpaceGroupOps ops;
  // Reference site: one of the rarest kind, so few translations are tried.
  std::vector<int> count;
  for (const auto& s : sites) {
    if (s.kind >= static_cast<int>(count.size())) count.resize(s.kind + 1, 0);
    ++count[s.kind];
  }
  int ref = 0;
  for (size_t i = 0; i < sites.size(); ++i)
    if (count[sites[i].kind] < count[sites[ref].kind]) ref = static_cast<int>(i);

  const SiteIndex index(g, sites, 2.0 * symprec);
  const auto pure = pure_translations(g, sites, index, ref, symprec);
  const std::vector<Rotation> point_group =
      pure.size() > 1 ? point_group_via_primitive(g, pure, symprec) : lattice_point_group(g, symprec);
  std::vector<double> image(3 * sites.size());
  for (const Rotation& r : point_group) {
    for (size_t i = 0; i < sites.size(); ++i) apply(r, sites[i].x, &image[3 * i]);
    for (const auto& target : sites) {
      if (target.kind != sites[ref].kind) continue;
      double t[3];
      for (int k = 0; k < 3; ++k) t[k] = target.x[k] - image[3 * ref + k];
      double refined[3];
      if (!accept_translation(g, sites, index, image, t, symprec, refined)) continue;
      // Two translations of one rotation differ by a pure translation, so the
      // whole coset is t + T: no need to try the remaining targets.
      for (const auto& tau : pure) {
        for (int k = 0; k < 3; ++k) {
          const double tk = refined[k] + tau[k];
          ops.translations.push_back(tk - std::floor(tk));
        }
        ops.rotations.push_back(r);
      }
      break;
    }
  }
  return ops;
}

}  // namespace

bool rotations_closed(const std::vector<Rotation>& rots) {
  // Distinct rotations as sorted keys.
  std::vector<unsigned long long> set;
  for (const auto& r : rots) {
    if (!small_entries(r)) return false;
    set.push_back(rotation_key(r));
  }
  std::sort(set.begin(), set.end());
  set.erase(std::unique(set.begin(), set.end()), set.end());
  auto in_set = [&](const Rotation& r) { return small_entries(r) && std::binary_search(set.begin(), set.end(), rotation_key(r)); };
  const Rotation identity{{1, 0, 0, 0, 1, 0, 0, 0, 1}};
  if (!in_set(identity)) return false;
  // Grow the group generated by elements of the set, one generator at a time,
  // by right-multiplying everything found so far with the generators.  The
  // set is a group iff nothing outside it ever appears and the generated group
  // covers it; this takes |G| x (number of generators, <= 3 or 4 for point
  // groups) products instead of |G|^2.
  std::vector<Rotation> group{identity}, gens;
  std::vector<unsigned long long> found{rotation_key(identity)};
  for (const auto& r : rots) {
    if (std::binary_search(found.begin(), found.end(), rotation_key(r))) continue;
    gens.push_back(r);
    std::vector<Rotation> frontier = group;
    while (!frontier.empty()) {
      std::vector<Rotation> next;
      for (const auto& x : frontier)
        for (const auto& gen : gens) {
          const Rotation y = multiply(x, gen);
          if (!in_set(y)) return false;
          const unsigned long long key = rotation_key(y);
          const auto it = std::lower_bound(found.begin(), found.end(), key);
          if (it != found.end() && *it == key) continue;
          found.insert(it, key);
          group.push_back(y);
          next.push_back(y);
        }
      frontier.swap(next);
    }
  }
  return found.size() == set.size();
}

SpaceGroupOps find_space_group_operations(const double* lattice, const double* frac, const int* atom_kind,
                                          int n_atoms, double symprec) {
  const Metric g = direct_metric(lattice);
  // Atoms sharing a position (mixed or split occupancy) are merged into one site.
  const std::vector<Site> sites = make_sites(g, frac, atom_kind, n_atoms, std::min(symprec, 1e-3));
  // Like spglib, retry with a tighter tolerance when a loose one admits
  // operations that do not close into a group.
  double tol = symprec;
  for (int attempt = 0; attempt < 4; ++attempt, tol *= 0.5) {
    SpaceGroupOps ops = search(g, sites, tol);
    if (rotations_closed(ops.rotations)) return ops;
  }
  SpaceGroupOps identity;
  identity.rotations.push_back(Rotation{{1, 0, 0, 0, 1, 0, 0, 0, 1}});
  identity.translations = {0.0, 0.0, 0.0};
  return identity;
}

}  // namespace xrdflow
