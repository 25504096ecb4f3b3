"""Augmentation: each effect against its formula, determinism, bad configs."""
from __future__ import annotations

import math

import numpy as np
import pytest

import xrdflow as xf
from xrdflow import _core
from xrdflow.radiation import TUBES

A = 4.0  # angstrom, primitive cubic test cell


def cubic(a: float = A, element: str = "Cu") -> xf.Structure:
    return xf.Structure.from_arrays((a, a, a, 90, 90, 90), [[0, 0, 0]], [element])


def rock_salt() -> xf.Structure:
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    return xf.Structure.from_arrays((5.64, 5.64, 5.64, 90, 90, 90), np.vstack([fcc, fcc + .5]) % 1,
                                    ["Na"] * 4 + ["Cl"] * 4)


def sharp(**kw) -> xf.Simulator:
    """Narrow Gaussian profile on a fine grid, one line, absolute intensities."""
    defaults = dict(radiation="CuKa1", two_theta=(20, 80), n_points=60001, U=0, V=0, W=1e-4, normalization="none")
    return xf.Simulator(**{**defaults, **kw})


def peak_position(x, y, near, half_width=0.5):
    """Centroid of the top of the peak near `near` (robust to grid sampling)."""
    window = np.abs(x - near) < half_width
    xs, ys = x[window], y[window]
    top = ys > 0.5 * ys.max()
    return float(np.sum(xs[top] * ys[top]) / np.sum(ys[top]))


def fwhm(x, y, near, half_width=2.0):
    window = np.abs(x - near) < half_width
    xs, ys = x[window], y[window]
    above = np.flatnonzero(ys >= 0.5 * ys.max())
    i, j = above[0], above[-1]
    half = 0.5 * ys.max()
    left = np.interp(half, [ys[i - 1], ys[i]], [xs[i - 1], xs[i]])
    right = np.interp(half, [ys[j + 1], ys[j]], [xs[j + 1], xs[j]])
    return right - left


def bragg(d, wavelength=TUBES["Cu"][0]):
    return 2 * math.degrees(math.asin(wavelength / (2 * d)))


# --------------------------------------------------------------- physics

def test_none_is_exactly_the_plain_render():
    sim = xf.Simulator("CuKa")
    cache = sim.reflections([rock_salt(), cubic()])
    plain, params = sim.render(cache)
    same, _ = sim.render(cache, augmentation=xf.Augmentation.none(), seed=3, epoch=7)
    assert params == {} and np.array_equal(plain, same)


def test_strain_moves_peaks_to_the_strained_d():
    sim = sharp()
    cache = sim.reflections([cubic()])
    y, p = sim.render(cache, augmentation=xf.Augmentation(strain=0.02), seed=11)
    e11, e22, e33, e23, e13, e12 = p["strain"][0]
    strain = np.array([[e11, e12, e13], [e12, e22, e23], [e13, e23, e33]])
    lattice = cache.lattices[0] @ (np.eye(3) + strain)
    recip = np.linalg.inv(lattice @ lattice.T)
    # The strain is averaged over the Laue group m-3m, so the cell stays cubic.
    laue = cache.laue_rotations[cache.laue_offsets[0]:cache.laue_offsets[1]]
    recip_sym = np.mean([r @ recip @ r.T for r in laue], axis=0)
    for h in ([1, 0, 0], [1, 1, 0], [1, 1, 1]):
        h = np.array(h)
        d = 1 / math.sqrt(h @ recip_sym @ h)
        assert peak_position(sim.two_theta_deg, y[0], bragg(d)) == pytest.approx(bragg(d), abs=2e-3)
        assert abs(bragg(d) - bragg(A / np.linalg.norm(h))) > 0.01  # it did move


@pytest.mark.filterwarnings("ignore:grid step")  # the instrument alone is narrower than the grid; size widens it
def test_scherrer_width():
    """Pure size broadening: FWHM = K lambda / (L cos theta) (radians)."""
    sim = xf.Simulator("CuKa1", two_theta=(20, 80), n_points=60001, U=0, V=0, W=1e-8, normalization="none")
    cache = sim.reflections([cubic()])
    y, p = sim.render(cache, augmentation=xf.Augmentation(crystallite_size_nm=(25.0, 25.0)))
    assert p["crystallite_size_nm"][0] == pytest.approx(25.0)
    tt = bragg(A / math.sqrt(2))  # (1 1 0)
    expected = math.degrees(0.9 * TUBES["Cu"][0] / (250.0 * math.cos(math.radians(tt / 2))))
    assert fwhm(sim.two_theta_deg, y[0], tt) == pytest.approx(expected, rel=0.01)


def test_kalpha2_angle_and_ratio():
    sim = xf.Simulator("CuKa", two_theta=(100, 125), n_points=25001, U=0, V=0, W=0.002, normalization="none")
    cache = sim.reflections([xf.Structure.from_arrays((3, 3, 3, 90, 90, 90), [[0, 0, 0]], ["Cu"])])
    aug = xf.Augmentation(kalpha2_probability=1.0, kalpha2_ratio=(0.3, 0.3))
    y, p = sim.render(cache, augmentation=aug)
    assert p["kalpha2_ratio"][0] == pytest.approx(0.3)
    d = 1.0  # (2 2 1) / (3 0 0) of a = 3 A
    t1, t2 = bragg(d, TUBES["Cu"][0]), bragg(d, TUBES["Cu"][1])
    x = sim.two_theta_deg
    assert peak_position(x, y[0], t1, 0.1) == pytest.approx(t1, abs=2e-3)
    assert peak_position(x, y[0], t2, 0.1) == pytest.approx(t2, abs=2e-3)
    mid = 0.5 * (t1 + t2)
    a1 = np.trapezoid(np.where((x < mid) & (x > t1 - 0.3), y[0], 0), x)
    a2 = np.trapezoid(np.where((x >= mid) & (x < t2 + 0.3), y[0], 0), x)

    def lp(tt):
        th = math.radians(tt / 2)
        return (1 + math.cos(2 * th) ** 2) / (math.sin(th) ** 2 * math.cos(th))

    assert a2 / a1 == pytest.approx(0.3 * lp(t2) / lp(t1), rel=0.01)
    off, p_off = sim.render(cache, augmentation=xf.Augmentation(kalpha2_probability=0.0))
    assert p_off["kalpha2_ratio"][0] == 0.0
    assert off[0][np.argmin(np.abs(x - t2))] < 0.01 * off[0].max()


def test_sample_displacement_shift():
    """Peaks move by -2 s cos(theta) / R radians."""
    sim = sharp()
    cache = sim.reflections([cubic()])
    s_mm, radius = 0.3, 240.0
    y, p = sim.render(cache, augmentation=xf.Augmentation(displacement_mm=(s_mm, s_mm), goniometer_radius_mm=radius))
    assert p["displacement_mm"][0] == pytest.approx(s_mm)
    for d in (A, A / math.sqrt(2), A / math.sqrt(3)):
        tt = bragg(d)
        shift = math.degrees(-2 * s_mm * math.cos(math.radians(tt / 2)) / radius)
        assert peak_position(sim.two_theta_deg, y[0], tt + shift) == pytest.approx(tt + shift, abs=2e-3)


def test_zero_shift():
    sim = sharp()
    cache = sim.reflections([cubic()])
    y, p = sim.render(cache, augmentation=xf.Augmentation(zero_shift_deg=(-0.04, -0.04)))
    tt = bragg(A)
    assert peak_position(sim.two_theta_deg, y[0], tt - 0.04) == pytest.approx(tt - 0.04, abs=2e-3)


def march_dollase(cos2, r):
    return (r * r * cos2 + (1 - cos2) / r) ** -1.5


def test_march_dollase_r1_is_identity_and_total_is_conserved():
    sim = sharp(two_theta=(20, 120), n_points=100001)
    cache = sim.reflections([rock_salt()])
    plain, _ = sim.render(cache)
    flat, p = sim.render(cache, augmentation=xf.Augmentation(po_probability=1.0, march_r=(1.0, 1.0)))
    np.testing.assert_allclose(flat, plain, rtol=1e-12, atol=0)
    textured, p = sim.render(cache, augmentation=xf.Augmentation(po_probability=1.0, march_r=(0.6, 0.6),
                                                                 po_direction=(0, 0, 1)))
    assert p["march_r"][0] == pytest.approx(0.6) and list(p["po_direction"][0]) == [0, 0, 1]
    # The texture moves intensity between peaks but not the total.
    area = np.trapezoid(plain[0], sim.two_theta_deg)
    assert np.trapezoid(textured[0], sim.two_theta_deg) == pytest.approx(area, rel=2e-3)
    # Each peak is scaled by the March-Dollase factor averaged over its
    # symmetry-equivalent reflections (relative to the others).
    x = sim.two_theta_deg

    def height(y, hkl):
        d = 5.64 / np.linalg.norm(hkl)
        return y[np.argmin(np.abs(x - bragg(d)))]

    def factor(family):
        members = {tuple(s * np.array(v)) for v in set(__import__("itertools").permutations(family))
                   for s in (np.array([1, 1, 1]), np.array([-1, 1, 1]), np.array([1, -1, 1]), np.array([1, 1, -1]),
                             np.array([-1, -1, 1]), np.array([-1, 1, -1]), np.array([1, -1, -1]), -np.ones(3, int))}
        cos2 = [m[2] ** 2 / np.dot(m, m) for m in members]
        return np.mean([march_dollase(c, 0.6) for c in cos2])

    ratio_200 = height(textured[0], (2, 0, 0)) / height(plain[0], (2, 0, 0))
    ratio_111 = height(textured[0], (1, 1, 1)) / height(plain[0], (1, 1, 1))
    assert ratio_200 / ratio_111 == pytest.approx(factor((2, 0, 0)) / factor((1, 1, 1)), rel=1e-3)


def test_debye_waller_scale():
    sim = sharp()
    cache = sim.reflections([cubic()])
    plain, _ = sim.render(cache)
    damped, p = sim.render(cache, augmentation=xf.Augmentation(b_extra=(1.5, 1.5)))
    x = sim.two_theta_deg
    for d in (A, A / math.sqrt(3)):
        i = np.argmin(np.abs(x - bragg(d)))
        assert damped[0][i] / plain[0][i] == pytest.approx(math.exp(-2 * 1.5 / (4 * d * d)), rel=1e-6)


def test_poisson_noise_mean_and_variance():
    """Counting noise: counts * y is Poisson with mean counts * y_clean (over
    many epochs), y_clean scaled so that its strongest point is 1."""
    sim = xf.Simulator("CuKa1", two_theta=(20, 60), n_points=400, U=0, V=0, W=0.3, normalization="none")
    cache = sim.reflections([cubic()])
    clean, _ = sim.render(cache)
    counts = 500.0
    aug = xf.Augmentation(noise_probability=1.0, counts=(counts, counts))
    draws = np.stack([sim.render(cache, augmentation=aug, epoch=e)[0][0] for e in range(400)]) * counts
    lam = clean[0] / clean[0].max() * counts
    strong = lam > 50
    assert strong.sum() > 20
    np.testing.assert_allclose(draws.mean(axis=0)[strong], lam[strong], rtol=0.05)
    # Variance = mean: pooled over the strong points (400 draws each: the
    # ratio has a standard error of 0.07 per point, ~0.011 pooled).
    ratio = draws.var(axis=0, ddof=1)[strong] / lam[strong]
    assert ratio.mean() == pytest.approx(1.0, abs=0.04)
    assert np.all(np.abs(ratio - 1) < 0.4)
    assert np.all(np.abs(draws - np.round(draws)) < 1e-3)  # whole counts without read noise


def test_poisson_generator_statistics():
    for lam in (0.5, 4.0, 37.5, 1e4):
        x = _core.sample_stream(7, 0, 3, "poisson", lam, 100_000)
        assert x.mean() == pytest.approx(lam, rel=0.02, abs=0.01)
        assert x.var() == pytest.approx(lam, rel=0.04, abs=0.02)
    u = _core.sample_stream(7, 0, 3, "uniform", 0.0, 100_000)
    assert 0 < u.min() and u.max() < 1 and u.mean() == pytest.approx(0.5, abs=0.005)
    z = _core.sample_stream(7, 0, 3, "normal", 0.0, 100_000)
    assert z.mean() == pytest.approx(0, abs=0.01) and z.std() == pytest.approx(1, abs=0.01)


@pytest.mark.parametrize("lam", [0.0, 0.3, 3.0, 12.5, 19.9, 20.5, 60.0])
def test_pattern_noise_matches_the_poisson_distribution(lam):
    """The per-point noise of augmented patterns (exact inversion below 20
    counts, 8 points at a time; Cornish-Fisher above): a chi-square test of
    200,000 draws against scipy's Poisson pmf, bins with < 20 expected merged
    into the tails.  Fixed seeds: the test cannot flake."""
    stats = pytest.importorskip("scipy.stats")
    n = 200_000
    x = _core.pattern_noise(11, 2, 5, np.full(n, lam), 0.0)
    assert np.all(x == np.round(x)) and x.min() >= 0
    if lam == 0.0:
        assert np.all(x == 0)
        return
    k = np.arange(0, int(lam + 12 * math.sqrt(lam) + 12))
    expected = stats.poisson.pmf(k, lam) * n
    keep = expected >= 20
    lo, hi = k[keep][0], k[keep][-1]
    observed = np.bincount(np.clip(x.astype(int), lo, hi) - lo, minlength=hi - lo + 1)
    exp_bins = stats.poisson.pmf(np.arange(lo, hi + 1), lam) * n
    exp_bins[0] = stats.poisson.cdf(lo, lam) * n
    exp_bins[-1] = stats.poisson.sf(hi - 1, lam) * n
    chi2 = float(((observed - exp_bins) ** 2 / exp_bins).sum())
    assert stats.chi2.sf(chi2, len(exp_bins) - 1) > 1e-3, (lam, chi2, len(exp_bins))


def test_pattern_noise_read_noise_mixed_means_and_determinism():
    n = 100_000
    lam = np.tile([4.0, 25.0, 900.0, 0.5], n // 4)  # exact and Cornish-Fisher points interleaved
    x = _core.pattern_noise(3, 0, 9, lam, 2.0)
    for value in (4.0, 25.0, 900.0, 0.5):
        sel = x[lam == value]
        assert sel.mean() == pytest.approx(value, abs=4 * math.sqrt((value + 4) / sel.size))
        assert sel.var() == pytest.approx(value + 4.0, rel=0.03)  # Poisson + read noise of sigma 2
    assert np.any(x != np.round(x))  # read noise makes counts fractional
    again = _core.pattern_noise(3, 0, 9, lam, 2.0)
    assert again.tobytes() == x.tobytes()
    assert _core.pattern_noise(3, 1, 9, lam, 2.0).tobytes() != x.tobytes()  # new epoch, new draws
    with pytest.raises(ValueError, match="mean 1 must be in"):
        _core.pattern_noise(3, 0, 9, np.array([1.0, -1.0]), 0.0)
    with pytest.raises(ValueError, match="read noise"):
        _core.pattern_noise(3, 0, 9, np.array([1.0]), float("nan"))


def test_pattern_noise_deviates_are_inverse_normal_f_of_the_stream_words_tails_included():
    """Point i of the pattern noise takes word i of the noise stream (Philox block 2^31 + i // 4);
    with a mean of 1e6 and no read noise its count is the Cornish-Fisher value of that word's normal
    deviate, rounded.  The central and tail parts of Giles' formula are computed in separate passes
    (normal_deviates_f), so the tail points (p < 0.0034 or p > 0.9966) are checked on their own."""
    n, lam = 40_000, 1e6
    x = _core.pattern_noise(5, 2, 11, np.full(n, lam), 0.0)
    words = np.asarray(_core.philox_words(5, 2, 11, 0x80000000, n // 4), dtype=np.uint64).reshape(-1)
    p = (2.0 * (words >> 9) + 1.0) / 2.0 ** 24
    z = _core.vecmath("normal_f", p)
    s = math.sqrt(lam)
    want = lam + s * z + (z * z - 1) / 6 + (z ** 3 - 3 * z) / (24 * s) - (2 * z ** 3 - 5 * z) / (36 * s)
    tail = (p < 0.0034) | (p > 0.9966)
    assert tail.sum() > 100
    assert np.max(np.abs(x[tail] - want[tail])) <= 0.6
    assert np.max(np.abs(x[~tail] - want[~tail])) <= 0.6


def test_poisson_lanes_equal_the_scalar_search():
    """The exact branch of the pattern noise (16 points at a time in vector lanes) gives the same
    counts as the scalar inversion, including u next to 0 and 1 and a last, partial group."""
    rng = np.random.default_rng(3)
    lam = np.concatenate([rng.uniform(0, 20, 10_000), [0.0, 19.999, 1e-9, 5.0, 5.0]])
    u = np.concatenate([rng.uniform(0, 1, 10_000), [0.5, 1 - 2 ** -32, 2 ** -32, 2 ** -32, 1 - 2 ** -32]])
    lanes = _core.poisson_inversion(lam, u, True)
    scalar = _core.poisson_inversion(lam, u, False)
    assert np.array_equal(lanes, scalar)
    assert lanes[-5] == 0 and lanes[-3] == 0 and lanes[-1] > 15
    # and they are the Poisson quantiles: k is the smallest with u <= F(k)
    stats = pytest.importorskip("scipy.stats")
    k = lanes[:2000]
    assert np.all(stats.poisson.cdf(k, lam[:2000]) >= u[:2000] - 1e-12)
    assert np.all((k == 0) | (stats.poisson.cdf(k - 1, lam[:2000]) < u[:2000] + 1e-12))
    with pytest.raises(ValueError, match="mean 0 must be in"):
        _core.poisson_inversion(np.array([25.0]), np.array([0.5]), True)


def test_vecmath_exp_and_log_match_numpy():
    """exp_arith / log_arith (cpp/include/xrdflow/vecmath.hpp, used where loops must vectorize) are
    within 2 ulp (exp) and 3 ulp (log) of NumPy's over their ranges; log_arith_f within 3e-7 relative."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-700, 700, 200_000), rng.uniform(-3, 3, 200_000), [-700.0, 0.0, 700.0]])
    got, want = _core.vecmath("exp", x), np.exp(x)
    assert np.max(np.abs(got - want) / np.spacing(want)) <= 2.0
    y = np.concatenate([10.0 ** rng.uniform(-300, 300, 200_000), rng.uniform(0.5, 2.0, 200_000), [1.0, 2.0]])
    got, want = _core.vecmath("log", y), np.log(y)
    assert np.all(np.abs(got - want) <= 3 * np.spacing(np.abs(want)) + 2e-17)  # 3 ulp; absolute near log = 0
    assert got[-2] == 0.0  # log 1 is exactly 0 (the cutoffs rely on it)
    yf = np.concatenate([10.0 ** rng.uniform(-30, 30, 100_000), [1.0]]).astype(np.float32).astype(np.float64)
    rel = np.abs(_core.vecmath("log_f", yf) - np.log(yf)) / np.maximum(np.abs(np.log(yf)), 1.0)
    assert rel.max() < 3e-7
    with pytest.raises(ValueError, match="-700 <= x <= 700"):
        _core.vecmath("exp", np.array([800.0]))
    with pytest.raises(ValueError, match="positive, finite, normal"):
        _core.vecmath("log", np.array([0.0]))


def test_philox_known_answers():
    """Random123's published test vectors for Philox4x32-10."""
    assert _core.philox4x32_10(0, 0, 0, 0, 0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert _core.philox4x32_10(*[0xFFFFFFFF] * 6) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert _core.philox4x32_10(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0) == (
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)


@pytest.mark.parametrize("first, n_blocks", [(0x80000000, 1027), (0xFFFFFFFA, 13), (0xC0000000, 3), (7, 0)])
def test_philox_stream_words_vector_path_matches_the_blocks(first, n_blocks):
    """The pattern noise's Philox words (the AVX2 path where the CPU has it) are the blocks
    philox4x32_10(index_lo, index_hi, epoch, block; seed_lo, seed_hi), block counters wrapping at 2^32."""
    seed, epoch, index = 2**40 + 17, 3, 2**33 + 5
    fast = _core.philox_words(seed, epoch, index, first, n_blocks)
    portable = _core.philox_words(seed, epoch, index, first, n_blocks, portable=True)
    assert fast.dtype == np.uint32 and fast.shape == (4 * n_blocks,)
    np.testing.assert_array_equal(fast, portable)
    for j in sorted({0, n_blocks // 2, n_blocks - 1}) if n_blocks else []:
        block = _core.philox4x32_10(index & 0xFFFFFFFF, index >> 32, epoch, (first + j) % 2**32,
                                    seed & 0xFFFFFFFF, seed >> 32)
        assert tuple(int(w) for w in fast[4 * j:4 * j + 4]) == block


def test_single_precision_normal_deviates_match_scipy():
    """inverse_normal_f (Giles' erfinv) over every uniform the pattern noise can draw, against scipy's ndtri."""
    from scipy.special import ndtri
    m = np.arange(0, 2**23, 7, dtype=np.float64)
    p = np.concatenate([(2 * m + 1) / 2**24, [2**-24, 1 - 2**-24]])
    z = _core.vecmath("normal_f", p)
    assert np.max(np.abs(z - ndtri(p))) < 1.3e-6
    assert np.all(np.diff(z[:-2]) >= 0)  # monotone
    with pytest.raises(ValueError, match="0 < p < 1"):
        _core.vecmath("normal_f", np.array([1.0]))


def test_background_and_hump_are_bounded_and_positive():
    sim = xf.Simulator("CuKa", normalization="none")
    cache = sim.reflections([cubic()])
    aug = xf.Augmentation(background_probability=1.0, background_level=(0.2, 0.2), hump_probability=1.0,
                          hump_level=(0.1, 0.1), hump_center_deg=(25, 25), hump_fwhm_deg=(10, 10))
    y, p = sim.render(cache, augmentation=aug)
    clean, _ = sim.render(cache)
    extra = y[0] - clean[0] / clean[0].max()
    assert extra.min() >= -1e-6 and extra.max() <= 0.2 + 0.1 + 1e-6
    assert p["background_level"][0] == pytest.approx(0.2) and p["hump_center_deg"][0] == pytest.approx(25)
    x = sim.two_theta_deg
    hump = 0.1 * np.exp(-4 * math.log(2) * (x - 25) ** 2 / 100)
    assert np.all(extra >= hump - 1e-6)


def test_mixtures_weight_fractions_and_partners():
    structs = [cubic(4.0), cubic(3.3, "Fe"), rock_salt(), cubic(3.6, "Ni")]
    sim = xf.Simulator("CuKa1")
    cache = sim.reflections(structs)
    aug = xf.Augmentation(mixture_probability=1.0, max_phases=3)
    y, p = sim.render(cache, augmentation=aug, seed=5)
    assert set(p["n_phases"]) <= {2, 3}
    for i in range(len(structs)):
        n = p["n_phases"][i]
        phases = p["phases"][i]
        assert phases[0] == i and len(set(phases[:n])) >= 2 and all(phases[n:] == -1)
        assert all(0 <= q < len(structs) and q != i for q in phases[1:n])
        assert p["fractions"][i][:n].sum() == pytest.approx(1.0) and all(p["fractions"][i][n:] == 0)


def test_mixture_scale_follows_weight_fractions():
    """Two phases with fractions w1, w2: each phase's integrated intensity is
    w_p / (cell mass x V) times its single-phase intensity (Hill & Howard)."""
    structs = [cubic(4.0), cubic(3.0, "Fe")]
    sim = xf.Simulator("CuKa1", two_theta=(15, 120), n_points=50001, normalization="none")
    cache = sim.reflections(structs)
    y, p = sim.render(cache, indices=[0], augmentation=xf.Augmentation(mixture_probability=1.0), seed=2)
    w0, w1 = p["fractions"][0][:2]
    pure0, pure1 = sim.render(cache)[0]
    v0, v1 = cache.volumes
    m0, m1 = cache.cell_mass
    expected = pure0 + pure1 * (w1 / (m1 * v1)) / (w0 / (m0 * v0))
    np.testing.assert_allclose(y[0], expected, rtol=1e-6, atol=1e-9 * expected.max())


# ----------------------------------------------------------- determinism

def test_same_key_same_bytes_any_threads_or_split(mp20_structures):
    sim = xf.Simulator("CuKa", n_points=2048, two_theta=(10, 60))
    cache = sim.reflections(mp20_structures[:30])
    aug = xf.Augmentation.realistic()
    y1, p1 = sim.render(cache, augmentation=aug, seed=42, epoch=3, threads=1)
    y2, p2 = sim.render(cache, augmentation=aug, seed=42, epoch=3, threads=2)
    assert np.array_equal(y1, y2)
    part, pp = sim.render(cache, indices=[17, 4, 29], augmentation=aug, seed=42, epoch=3)
    assert np.array_equal(part, y1[[17, 4, 29]])
    for key in p1:
        assert np.array_equal(p1[key], p2[key]) and np.array_equal(pp[key], p1[key][[17, 4, 29]])
    other_epoch, _ = sim.render(cache, augmentation=aug, seed=42, epoch=4)
    other_seed, _ = sim.render(cache, augmentation=aug, seed=43, epoch=3)
    assert not np.any(np.all(other_epoch == y1, axis=1)) and not np.any(np.all(other_seed == y1, axis=1))


def test_realistic_draws_stay_in_their_ranges(mp20_structures):
    sim = xf.Simulator("CuKa", n_points=2048, two_theta=(10, 60))
    cache = sim.reflections(mp20_structures[:50])
    aug = xf.Augmentation.realistic()
    y, p = sim.render(cache, augmentation=aug, seed=1)
    assert np.all(np.isfinite(y)) and y.dtype == np.float32
    assert np.all(np.abs(p["strain"]) <= aug.strain)
    assert np.all((p["crystallite_size_nm"] >= 20) & (p["crystallite_size_nm"] <= 200))
    assert np.all((p["counts"] >= 1e3) & (p["counts"] <= 1e5))
    assert np.all((p["march_r"] >= 0.7) & (p["march_r"] <= 1.3))
    textured = np.any(p["po_direction"] != 0, axis=1)
    assert 10 < textured.sum() < 40  # po_probability = 0.5
    assert np.all(p["march_r"][~textured] == 1.0)


def test_tube_choice_and_cache_reach():
    structs = [cubic()]
    cu = xf.Simulator("CuKa")
    aug = xf.Augmentation(tubes=("CuKa", "CoKa"))
    y, p = cu.render(cu.reflections(structs), augmentation=aug, indices=[0, 0, 0, 0, 0, 0, 0, 0], seed=9)
    assert set(np.round(p["wavelength"], 5)) <= {TUBES["Cu"][0], TUBES["Co"][0]}
    with pytest.raises(ValueError, match="d_min"):
        cu.render(cu.reflections(structs), augmentation=xf.Augmentation(tubes=("MoKa",)))
    mo = xf.Simulator("MoKa")
    mo.render(mo.reflections(structs), augmentation=xf.Augmentation(tubes=("MoKa", "CuKa")))


# ------------------------------------------------------------ bad configs

@pytest.mark.parametrize("kwargs,field", [
    (dict(crystallite_size_nm=(-5, 10)), "crystallite_size_nm"),
    (dict(crystallite_size_nm=(50, 10)), "crystallite_size_nm"),
    (dict(width_scale=(0.0, 1.0)), "width_scale"),
    (dict(march_r=(0.0, 1.0)), "march_r"),
    (dict(march_r=(-1.0, 1.0)), "march_r"),
    (dict(zero_shift_deg=(0.1, -0.1)), "zero_shift_deg"),
    (dict(po_probability=1.5), "po_probability"),
    (dict(noise_probability=-0.1), "noise_probability"),
    (dict(kalpha2_probability=2.0), "kalpha2_probability"),
    (dict(strain=-0.01), "strain"),
    (dict(counts=(0, 10)), "counts"),
    (dict(max_phases=5), "max_phases"),
    (dict(microstrain=(0.0, float("nan"))), "microstrain"),
    (dict(po_direction=(0, 0, 0)), "po_direction"),
    (dict(tubes=("XxKa",)), "unknown radiation"),
])
def test_bad_configs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        xf.Augmentation(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(probability=1.5), "ScanRange.probability"),
    (dict(start_deg=(30.0, 10.0)), "ScanRange.start_deg is reversed"),
    (dict(end_deg=(50.0, float("inf"))), "ScanRange.end_deg must be finite"),
    (dict(start_deg=(5.0, 60.0), end_deg=(50.0, 90.0)), "must lie below end_deg"),
    (dict(start_deg=(-5.0, 10.0)), "ScanRange.start_deg must be within"),
])
def test_bad_scan_ranges_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        xf.ScanRange(**kwargs)


def test_fixed_scan_range_fills_outside_with_the_smallest_value_inside():
    grid = np.linspace(5.0, 90.0, 11)  # 5, 13.5, ..., 90 deg
    y = np.array([np.arange(11.0), 10.0 - np.arange(11.0)])
    params = xf.ScanRange.fixed(20.0, 60.0).apply(y, grid, indices=[0, 1], seed=0)
    # inside [20, 60]: points 2..6 (22, 30.5, 39, 47.5, 56 deg)
    assert np.array_equal(y[0], [2, 2, 2, 3, 4, 5, 6, 2, 2, 2, 2])
    assert np.array_equal(y[1], [4, 4, 8, 7, 6, 5, 4, 4, 4, 4, 4])
    assert np.array_equal(params["scan_start_deg"], [20.0, 20.0]) and np.array_equal(params["scan_end_deg"], [60, 60])
    with pytest.raises(ValueError, match="do not match"):
        xf.ScanRange.fixed(20.0, 60.0).apply(y, grid[:5], indices=[0, 1], seed=0)


def test_bad_render_arguments():
    sim = xf.Simulator("CuKa")
    cache = sim.reflections([cubic()])
    aug = xf.Augmentation.realistic()
    with pytest.raises(IndexError):
        sim.render(cache, indices=[1], augmentation=aug)
    with pytest.raises(TypeError):
        sim.render(cache, indices=[0.5], augmentation=aug)
    with pytest.raises(ValueError, match="seed"):
        sim.render(cache, augmentation=aug, seed=-1)
    with pytest.raises(ValueError, match="epoch"):
        sim.render(cache, augmentation=aug, epoch=2 ** 32)
    with pytest.raises(TypeError, match="Augmentation"):
        sim.render(cache, augmentation={"strain": 0.1})
