"""xrdflow.models: graphs, equivariant crystal encoder, pattern encoder, CLIP loss, dual tower.
Tiny models only; the whole file runs in a few seconds on 2 cores."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("e3nn")
pytest.importorskip("vesin")

from e3nn import o3  # noqa: E402
from e3nn.util.test import assert_equivariant  # noqa: E402

import xrdflow as xf  # noqa: E402
from xrdflow import examples  # noqa: E402
from xrdflow.models import (  # noqa: E402
    CrystalEncoder, CrystalEncoderConfig, CrystalGraph, DualTower, DualTowerConfig, GraphBatch,
    PatternEncoder, PatternEncoderConfig, build_graph, build_graphs, clip_loss, collate_graphs,
    lattice_descriptor, load_graphs, plane_q_values, save_graphs,
)

TINY_CRYSTAL = dict(hidden_irreps="8x0e+4x1o+2x2e", product_channels=4, radial_hidden=(8,),
                    readout_dim=8, feat_dim=8, max_neighbors=12, avg_num_neighbors=12.0)
TINY_PATTERN = dict(n_points=256, stem_channels=4, stem_kernel=5, stem_stride=2, stem_pool=2,
                    widths=(4, 8), blocks=(1, 1))


def tiny_encoder(correlation=2, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return CrystalEncoder(CrystalEncoderConfig(**{**TINY_CRYSTAL, **kw}, correlation=correlation)).to(dtype).eval()


def embed(encoder, structures, dtype=torch.float64):
    cfg = encoder.cfg
    graphs = [build_graph(s, **cfg.graph_kwargs()) for s in structures]
    with torch.no_grad():
        return encoder(collate_graphs(graphs).to(dtype=dtype))


@pytest.fixture(scope="module")
def nacl():
    return xf.Structure.from_cif(examples.path("NaCl"))


@pytest.fixture(scope="module")
def rutile():
    return xf.Structure.from_cif(examples.path("RuO2"))


@pytest.fixture(scope="module")
def mp20():
    from xrdflow.data import bundled_dataset

    return bundled_dataset(limit=8).structures


def supercell(s, reps=(2, 1, 1)):
    shifts = np.array([(i, j, k) for i in range(reps[0]) for j in range(reps[1]) for k in range(reps[2])])
    frac = ((s.frac[None, :, :] + shifts[:, None, :]) / np.array(reps)).reshape(-1, 3)
    n = len(shifts)
    return xf.Structure(s.lattice * np.array(reps)[:, None], frac, np.tile(s.numbers, n),
                        occupancy=np.tile(s.occupancy, n))


# -- graphs ---------------------------------------------------------------------------------------

def test_graph_arrays_and_edges(nacl):
    g = build_graph(nacl, cutoff_angstrom=5.0, max_neighbors=16)
    assert isinstance(g, CrystalGraph) and g.n_sites == 8 and g.n_atoms == 8
    assert g.edge_index.dtype == np.int64 and g.edge_vec.dtype == np.float32
    d = np.linalg.norm(g.edge_vec, axis=1)
    assert d.max() < 5.0 and d.min() == pytest.approx(5.6402 / 2, abs=1e-4)
    # cap 16 would split the 12-atom second shell (6 + 12): the shell is kept whole
    assert np.all(np.bincount(g.edge_index[1]) == 18)
    # cap 6 keeps exactly the first shell
    g6 = build_graph(nacl, 5.0, 6)
    assert np.all(np.bincount(g6.edge_index[1]) == 6)
    np.testing.assert_allclose(np.linalg.norm(g6.edge_vec, axis=1), 5.6402 / 2, atol=1e-4)
    # edge vectors: r_j + shift - r_i
    j, i = g.edge_index
    vec = g.positions[j] + g.edge_shift @ g.lattice - g.positions[i]
    np.testing.assert_allclose(vec, g.edge_vec, atol=1e-5)


def test_giant_dense_cell_is_capped():
    rng = np.random.default_rng(1)
    n = 400  # 400 atoms in (12 A)^3: ~ 90 neighbours within 5 A
    s = xf.Structure(np.eye(3) * 12.0, rng.random((n, 3)), rng.integers(1, 40, n))
    g = build_graph(s, 5.0, 10)
    deg = np.bincount(g.edge_index[1], minlength=n)
    full = build_graph(s, 5.0, 1000)
    assert np.bincount(full.edge_index[1]).min() > 50
    # 10 nearest, plus the rare neighbour within 1e-3 A of the 10th (shells are not split)
    assert deg.min() == 10 and deg.max() <= 12 and np.mean(deg == 10) > 0.9
    for centre in range(n):
        d_all = np.sort(np.linalg.norm(full.edge_vec[full.edge_index[1] == centre], axis=1))
        d_cap = np.sort(np.linalg.norm(g.edge_vec[g.edge_index[1] == centre], axis=1))
        np.testing.assert_allclose(d_cap, d_all[:len(d_cap)], rtol=1e-6)
        assert d_all[len(d_cap)] > d_all[9] + 1e-3


def test_isolated_atom_has_no_edges_and_still_encodes():
    s = xf.Structure(np.eye(3) * 20.0, [[0.1, 0.2, 0.3]], [26])
    g = build_graph(s)
    assert g.n_sites == 1 and g.n_edges == 0
    enc = tiny_encoder()
    out = embed(enc, [s, s])
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    # without neighbours only the species (and the lattice) matters: another position gives the same
    s2 = xf.Structure(np.eye(3) * 20.0, [[0.7, 0.2, 0.9]], [26])
    torch.testing.assert_close(embed(enc, [s2])[0], out[0])
    # a bigger box changes only the lattice branch: the local model alone cannot tell
    s3 = xf.Structure(np.eye(3) * 25.0, [[0.7, 0.2, 0.9]], [26])
    assert (embed(enc, [s3])[0] - out[0]).abs().max() > 1e-4
    local = tiny_encoder(lattice_features=False)
    torch.testing.assert_close(embed(local, [s3])[0], embed(local, [s])[0])


def test_bad_graph_inputs(nacl):
    with pytest.raises(xf.structure.StructureError, match="no atoms"):
        xf.Structure(np.eye(3) * 5, np.zeros((0, 3)), [])
    with pytest.raises(TypeError, match="xrdflow.Structure"):
        build_graph({"lattice": np.eye(3)})
    with pytest.raises(ValueError, match="cutoff_angstrom"):
        build_graph(nacl, cutoff_angstrom=-1.0)
    with pytest.raises(ValueError, match="max_neighbors"):
        build_graph(nacl, max_neighbors=0)
    with pytest.raises(ValueError, match="no graphs"):
        collate_graphs([])
    with pytest.raises(TypeError, match="CrystalGraph"):
        collate_graphs([nacl])
    with pytest.raises(TypeError, match="GraphBatch"):
        tiny_encoder()(build_graph(nacl))


def test_partial_occupancy_sites(nacl):
    lat = np.eye(3) * 4.0
    frac = [[0, 0, 0], [0, 0, 0], [0.5, 0.5, 0.5]]
    mixed = xf.Structure(lat, frac, [11, 19, 17], occupancy=[0.5, 0.5, 1.0])
    g = build_graph(mixed)
    assert g.n_sites == 2 and g.n_atoms == 3
    np.testing.assert_allclose(g.atom_weight, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(g.site_weight, [1.0, 1.0])
    assert np.all(np.linalg.norm(g.edge_vec, axis=1) > 1.0)  # no edge between co-located atoms
    vacant = xf.Structure(lat, frac[1:], [11, 17], occupancy=[0.6, 1.0])
    np.testing.assert_allclose(build_graph(vacant).site_weight, [0.6, 1.0], rtol=1e-6)
    # a site split into two halves of the same element equals the ordered site
    split = xf.Structure(lat, frac, [11, 11, 17], occupancy=[0.5, 0.5, 1.0])
    ordered = xf.Structure(lat, frac[1:], [11, 17])
    enc = tiny_encoder()
    out = embed(enc, [split, ordered, mixed, vacant])
    torch.testing.assert_close(out[0], out[1])
    assert (out[2] - out[1]).abs().max() > 1e-4  # Na/K mixture differs from pure Na
    assert (out[3] - out[1]).abs().max() > 1e-4  # so does a partly vacant site


def test_build_graphs_collate_and_save_roundtrip(tmp_path, mp20):
    gs = build_graphs(mp20, 5.0, 12, progress=False)
    assert [g.label for g in gs] == [s.label for s in mp20]
    batch = collate_graphs(gs)
    assert isinstance(batch, GraphBatch) and len(batch) == len(mp20)
    assert batch.n_sites == sum(g.n_sites for g in gs)
    assert int(batch.edge_index.max()) < batch.n_sites
    assert batch.to("cpu", dtype=torch.float64).edge_vec.dtype == torch.float64
    path = tmp_path / "graphs.npz"
    save_graphs(path, gs)
    back = load_graphs(path)
    assert len(back) == len(gs)
    for a, b in zip(gs, back):
        assert a.label == b.label and a.max_neighbors == b.max_neighbors
        for name in ("numbers", "atom_site", "edge_index", "edge_vec", "site_weight", "lattice",
                     "lattice_descriptor"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert b.lattice_descriptor.dtype == np.float32 and b.lattice_k == 32
    # a file of an older xrdflow (no lattice descriptor) is refused with a clear message
    with np.load(path) as data:
        old = {k: data[k] for k in data.files if not k.startswith("lattice_descriptor")}
    old_path = tmp_path / "old.npz"
    np.savez(old_path, **old)
    with pytest.raises(ValueError, match="lattice_descriptor.*rebuild"):
        load_graphs(old_path)
    with pytest.raises(ValueError, match="lattice_k"):
        collate_graphs([gs[0], build_graph(mp20[1], 5.0, 12, lattice_k=8)])


# -- crystal encoder symmetry ----------------------------------------------------------------------

def test_rotation_invariance(rutile, mp20):
    enc = tiny_encoder()
    torch.manual_seed(3)
    structures = [rutile, mp20[0], mp20[1]]
    rotated = []
    for s in structures:
        R = o3.rand_matrix().numpy().astype(np.float64)
        rotated.append(xf.Structure(s.lattice @ R.T, s.frac, s.numbers))
    a, b = embed(enc, structures), embed(enc, rotated)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a.std(0).max() > 1e-3  # not a constant


def test_node_features_equivariant(rutile):
    enc = tiny_encoder()
    batch = collate_graphs([build_graph(rutile, **enc.cfg.graph_kwargs())]).to(dtype=torch.float64)

    def nodes(edge_vec):
        return enc.forward_nodes(dataclasses.replace(batch, edge_vec=edge_vec))

    assert_equivariant(nodes, args_in=[batch.edge_vec], irreps_in=[enc.irreps_in],
                       irreps_out=[enc.irreps_out])


def test_translation_and_permutation_invariance(rutile):
    enc = tiny_encoder()
    rng = np.random.default_rng(0)
    moved = xf.Structure(rutile.lattice, rutile.frac + rng.random(3), rutile.numbers)
    perm = rng.permutation(rutile.n_atoms)
    permuted = xf.Structure(rutile.lattice, rutile.frac[perm], rutile.numbers[perm])
    out = embed(enc, [rutile, moved, permuted])
    torch.testing.assert_close(out[1], out[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[2], out[0], atol=1e-6, rtol=1e-6)


def test_cell_choice_invariance(nacl, mp20):
    import spglib

    lat, frac, num = spglib.standardize_cell((nacl.lattice, nacl.frac, nacl.numbers), to_primitive=True)
    primitive = xf.Structure(lat, frac, num)
    assert primitive.n_atoms == 2 and nacl.n_atoms == 8
    enc = tiny_encoder()
    low_sym = mp20[2]
    out = embed(enc, [nacl, primitive, supercell(nacl, (2, 1, 1)), low_sym, supercell(low_sym, (1, 2, 2))])
    torch.testing.assert_close(out[1], out[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[2], out[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[4], out[3], atol=1e-6, rtol=1e-5)
    assert (out[3] - out[0]).abs().max() > 1e-4


def test_correlation_order_changes_output(rutile, mp20):
    structures = [rutile] + list(mp20[:3])
    out1 = embed(tiny_encoder(correlation=1, seed=0), structures)
    out2 = embed(tiny_encoder(correlation=2, seed=0), structures)
    out3 = embed(tiny_encoder(correlation=3, seed=0), structures)
    assert out1.shape == out2.shape == out3.shape
    assert (out1 - out2).abs().max() > 1e-4 and (out2 - out3).abs().max() > 1e-4
    with pytest.raises(ValueError, match="correlation"):
        CrystalEncoderConfig(correlation=4)


# -- pattern encoder ------------------------------------------------------------------------------

def test_pattern_encoder_shapes_and_scale_invariance():
    torch.manual_seed(0)
    enc = PatternEncoder(PatternEncoderConfig(**TINY_PATTERN)).eval()
    y = torch.rand(5, 256) ** 4
    f = enc(y)
    assert f.shape == (5, enc.feat_dim) and enc.feat_dim == 8
    torch.testing.assert_close(enc(1000.0 * y + 5.0), f, atol=1e-5, rtol=1e-4)
    assert (enc(y.flip(-1)) - f).abs().max() > 1e-4
    flat = enc(torch.full((2, 256), 7.0))  # constant pattern -> zeros input, finite output
    assert torch.isfinite(flat).all()
    double = enc(y.double())  # any float dtype is accepted
    torch.testing.assert_close(double, f)


def test_pattern_encoder_bad_inputs():
    enc = PatternEncoder(PatternEncoderConfig(**TINY_PATTERN))
    with pytest.raises(ValueError, match=r"\(B, 256\)"):
        enc(torch.rand(2, 4096))
    with pytest.raises(ValueError, match="2D"):
        enc(torch.rand(256))
    y = torch.rand(3, 256)
    y[1, 7] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*\[1\]"):
        enc(y)
    with pytest.raises(TypeError, match="torch.Tensor"):
        enc(np.zeros((2, 256), dtype=np.float32))
    with pytest.raises(ValueError, match="n_points"):
        PatternEncoderConfig(n_points=16, stem_stride=4, stem_pool=2, widths=(8, 8, 8), blocks=(1, 1, 1))


@pytest.mark.parametrize("n_points", [256, 250, 1001])
@pytest.mark.parametrize("stem_kernel,stem_pool,kernel", [(5, 2, 3), (7, 1, 5), (4, 3, 3)])
def test_pattern_encoder_final_length_matches_the_layers(n_points, stem_kernel, stem_pool, kernel):
    cfg = PatternEncoderConfig(n_points=n_points, stem_channels=4, stem_kernel=stem_kernel, stem_stride=2,
                               stem_pool=stem_pool, widths=(4, 8, 8), blocks=(1, 1, 1), kernel=kernel)
    enc = PatternEncoder(cfg).eval()
    x = enc.stages(enc.stem(torch.rand(2, 1, n_points)))
    assert x.shape[-1] == cfg.final_length()
    flat = PatternEncoder(PatternEncoderConfig(**{**cfg.__dict__, "readout": "flatten", "coord_channel": True}))
    assert flat.eval()(torch.rand(3, n_points)).shape == (3, cfg.feat_dim)


def _peak_patterns(centres, n_points=256, width=2.0):
    grid = torch.arange(n_points, dtype=torch.float32)
    return torch.stack([torch.exp(-0.5 * ((grid - c) / width) ** 2) for c in centres])


def test_pattern_encoder_readouts_and_peak_position():
    """The average readout cannot tell where a lone peak sits (a shift by a multiple of the total
    stride moves the feature maps, and the average, unchanged); flatten and the coordinate
    channel can. Why the position-aware options exist: peak positions carry the lattice."""
    torch.manual_seed(0)
    y = _peak_patterns([96.0, 96.0 + 32.0])  # total stride of TINY_PATTERN is 2 * 2 * 2 = 8
    avg = PatternEncoder(PatternEncoderConfig(**TINY_PATTERN)).eval()
    f = avg(y)
    torch.testing.assert_close(f[0], f[1], atol=1e-6, rtol=1e-5)
    for change in ({"readout": "flatten"}, {"coord_channel": True}):
        enc = PatternEncoder(PatternEncoderConfig(**TINY_PATTERN, **change)).eval()
        g = enc(y)
        assert (g[0] - g[1]).abs().max() > 1e-3 * g.abs().max()
        torch.testing.assert_close(enc(1000.0 * y + 5.0), g, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="readout"):
        PatternEncoderConfig(readout="max")
    with pytest.raises(TypeError, match="coord_channel"):
        PatternEncoderConfig(coord_channel="yes")


# -- loss and dual tower --------------------------------------------------------------------------

def test_clip_loss_by_hand():
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    x = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    scale = math.log(1 / 0.5)  # temperature 0.5
    loss, stats = clip_loss(c, x, torch.tensor(scale))
    s = np.array([[float(np.dot(ci, xj)) for xj in x.numpy()] for ci in c.numpy()]) / 0.5
    row = -np.mean([s[i, i] - np.log(np.exp(s[i]).sum()) for i in range(3)])
    col = -np.mean([s[i, i] - np.log(np.exp(s[:, i]).sum()) for i in range(3)])
    assert float(loss) == pytest.approx(0.5 * (row + col), rel=1e-6)
    # crystal 0 matches pattern 2 (1.0) better than its own pattern 0 (0.8): not all right
    assert 0 < stats["acc"] < 1
    acc_c2x = np.mean(s.argmax(1) == np.arange(3))
    acc_x2c = np.mean(s.argmax(0) == np.arange(3))
    assert stats["acc_crystal_to_pattern"] == pytest.approx(acc_c2x)
    assert stats["acc_pattern_to_crystal"] == pytest.approx(acc_x2c)
    assert stats["temperature"] == pytest.approx(0.5)
    # the scale is clamped at 100 (CLIP)
    _, st = clip_loss(c, x, torch.tensor(10.0))
    assert st["temperature"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(c, x[:2], torch.tensor(scale))


def tiny_tower():
    torch.manual_seed(0)
    return DualTower(DualTowerConfig(crystal=CrystalEncoderConfig(**TINY_CRYSTAL),
                                     pattern=PatternEncoderConfig(**TINY_PATTERN), embed_dim=16,
                                     projection_hidden=16))


def test_dual_tower_gradients_flow(mp20):
    model = tiny_tower()
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    batch = collate_graphs(build_graphs(mp20[:4], **model.graph_kwargs(), progress=False))
    y = torch.rand(4, 256)
    c, x = model.encode_crystals(batch), model.encode_patterns(y)
    assert c.shape == x.shape == (4, 16)
    torch.testing.assert_close(c.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(x.norm(dim=1), torch.ones(4))
    loss, stats = model(batch, y)
    loss.backward()
    assert set(stats) >= {"loss", "acc", "temperature"}
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
    assert float(model.logit_scale.grad) != 0.0
    with pytest.raises(ValueError, match="line up"):
        model(batch, y[:3])


def test_structure_embedding_fuses_the_simulated_pattern(nacl, mp20):
    """encode_structures = normalize(c + w p) by hand; w = 0 is the crystal tower; the fused embedding keeps
    the invariance to the choice of cell, because the powder pattern of a supercell is the same pattern."""
    import spglib

    from xrdflow.models import fuse_embeddings

    torch.manual_seed(0)
    base = tiny_tower()
    fused = DualTower(dataclasses.replace(base.cfg, simulated_pattern_weight=2.5))
    fused.load_state_dict(base.state_dict())
    base.eval(), fused.eval()
    nacl = xf.Structure(nacl.lattice, nacl.frac, nacl.numbers)   # B = 0 like the cells below (the CIF has B)
    lat, frac, num = spglib.standardize_cell((nacl.lattice, nacl.frac, nacl.numbers), to_primitive=True)
    structures = [nacl, xf.Structure(lat, frac, num), supercell(nacl, (2, 1, 1)), mp20[2], supercell(mp20[2], (1, 2, 2))]
    sim = xf.Simulator(radiation="CuKa", two_theta=(10.0, 80.0), n_points=256, W=0.5)
    y = torch.from_numpy(sim.patterns(structures))
    torch.testing.assert_close(y[1], y[0], atol=1e-5, rtol=0)
    batch = collate_graphs(build_graphs(structures, **base.graph_kwargs(), progress=False))
    with torch.no_grad():
        c, p = base.encode_crystals(batch), base.encode_patterns(y)
        torch.testing.assert_close(base.encode_structures(batch), c)         # w = 0 needs no pattern
        e = fused.encode_structures(batch, y)
    by_hand = (c + 2.5 * p) / torch.linalg.norm(c + 2.5 * p, dim=1, keepdim=True)
    torch.testing.assert_close(e, by_hand)
    torch.testing.assert_close(fuse_embeddings(c, p, 0.0), c)
    for i, j in ((1, 0), (2, 0), (4, 3)):
        torch.testing.assert_close(e[i], e[j], atol=1e-5, rtol=1e-5)
    assert (e[3] - e[0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="simulated_patterns"):
        fused.encode_structures(batch)
    with pytest.raises(ValueError, match="5 crystals but 4 simulated patterns"):
        fused.encode_structures(batch, y[:4])
    with pytest.raises(ValueError, match="same shape"):
        fuse_embeddings(c, p[:4], 1.0)
    loss, _ = fused(batch, y + 0.1 * torch.rand_like(y), y)   # the training loss of such a model
    loss.backward()
    for tower in (fused.crystal_encoder, fused.pattern_encoder):   # both sides of the fused embedding learn
        assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in tower.parameters())
    for bad in (-1.0, float("nan"), float("inf"), True, "3"):
        with pytest.raises(ValueError, match="simulated_pattern_weight"):
            dataclasses.replace(base.cfg, simulated_pattern_weight=bad)


def test_config_roundtrip_through_yaml():
    yaml = pytest.importorskip("yaml")
    cfg = DualTowerConfig(crystal=CrystalEncoderConfig(**TINY_CRYSTAL), pattern=PatternEncoderConfig(**TINY_PATTERN))
    data = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(cfg)))
    back = DualTowerConfig(**data)
    assert back == cfg
    with pytest.raises(ValueError, match="unknown crystal config keys"):
        DualTowerConfig(crystal={"hidden": 3})


# -- lattice descriptor and the lattice branch ------------------------------------------------------

def test_plane_q_values_simple_cubic_by_hand():
    a = 4.0
    q = plane_q_values(np.eye(3) * a, 32)
    # planes of a simple cubic lattice, +-h once: h^2+k^2+l^2 = 1 (3 of them), 2 (6), 3 (4), 4 (3), 5 (12), 6 (12)
    n2 = np.repeat([1, 2, 3, 4, 5, 6], [3, 6, 4, 3, 12, 12])[:32]
    np.testing.assert_allclose(q, 2 * np.pi / a * np.sqrt(n2), rtol=1e-12)
    assert np.all(np.diff(q) >= 0)
    # the same lattice in another basis (unimodular change of basis) has the same planes
    U = np.array([[1, 1, 0], [0, 1, 2], [0, 0, 1]])
    np.testing.assert_allclose(plane_q_values(U @ (np.eye(3) * a), 32), q, rtol=1e-10)
    s = xf.Structure(np.eye(3) * a, [[0.1, 0.2, 0.3]], [29])
    d = lattice_descriptor(s, 32)
    assert d.dtype == np.float32 and d.shape == (33,)
    np.testing.assert_allclose(d[:32], q, rtol=1e-6)
    assert d[32] == pytest.approx(a ** 3)  # volume per atom
    # NaCl (fcc, a = 5.6402): the primitive lattice's planes are fcc's allowed ones: 111 (4), 200 (3), 220 (6)
    nacl = xf.Structure.from_cif(examples.path("NaCl"))
    d = lattice_descriptor(nacl, 13)
    n2 = np.repeat([3, 4, 8], [4, 3, 6])
    np.testing.assert_allclose(d[:13], 2 * np.pi / 5.6402 * np.sqrt(n2), rtol=1e-5)
    assert d[13] == pytest.approx(5.6402 ** 3 / 8, rel=1e-5)


def _rotated(s, seed):
    torch.manual_seed(seed)
    R = o3.rand_matrix().numpy().astype(np.float64)
    return xf.Structure(s.lattice @ R.T, s.frac, s.numbers, occupancy=s.occupancy)


def test_lattice_descriptor_invariance(nacl, rutile, mp20):
    import spglib

    rng = np.random.default_rng(2)
    for s in (rutile, mp20[0], mp20[3]):
        ref = lattice_descriptor(s)
        perm = rng.permutation(s.n_atoms)
        for other in (_rotated(s, 1),
                      xf.Structure(s.lattice, s.frac[perm] + rng.random(3), s.numbers[perm]),
                      supercell(s, (1, 2, 2))):
            np.testing.assert_allclose(lattice_descriptor(other), ref, rtol=2e-6)
    lat, frac, num = spglib.standardize_cell((nacl.lattice, nacl.frac, nacl.numbers), to_primitive=True)
    primitive = xf.Structure(lat, frac, num)
    ref = lattice_descriptor(nacl)
    for other in (primitive, supercell(nacl, (2, 1, 1)), supercell(primitive, (2, 1, 1))):
        np.testing.assert_allclose(lattice_descriptor(other), ref, rtol=2e-6)
    # a different lattice gives a different descriptor
    assert np.abs(lattice_descriptor(mp20[0]) - lattice_descriptor(mp20[3])).max() > 1e-2
    g = build_graph(supercell(mp20[5], (2, 1, 1)), lattice_k=16)
    np.testing.assert_allclose(g.lattice_descriptor, lattice_descriptor(mp20[5], 16), rtol=2e-6)


def test_lattice_descriptor_bad_input(nacl):
    with pytest.raises(ValueError, match="degenerate"):
        plane_q_values([[4, 0, 0], [0, 4, 0], [4, 4, 0]])  # coplanar vectors
    with pytest.raises(ValueError, match="finite"):
        plane_q_values(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        plane_q_values(np.eye(2))
    with pytest.raises(ValueError, match="lattice_k"):
        plane_q_values(np.eye(3), 0)
    with pytest.raises(ValueError, match="lattice_k"):
        build_graph(nacl, lattice_k=0)
    with pytest.raises(TypeError, match="xrdflow.Structure"):
        lattice_descriptor(np.eye(3))
    # an encoder built for another lattice_k refuses the batch and says how to fix it
    with pytest.raises(ValueError, match="graph_kwargs"):
        tiny_encoder(lattice_k=8)(collate_graphs([build_graph(nacl, 5.0, 12)]).to(dtype=torch.float64))


def test_lattice_features_off_is_the_local_model(mp20):
    on, off = tiny_encoder(), tiny_encoder(lattice_features=False)
    keys_on, keys_off = set(on.state_dict()), set(off.state_dict())
    assert keys_off == {k for k in keys_on if not k.startswith(("lattice.", "fuse."))}
    assert any(k.startswith("lattice.") for k in keys_on)
    for k in keys_off:  # same seed: the shared modules start identical
        torch.testing.assert_close(off.state_dict()[k], on.state_dict()[k])
    batch = collate_graphs(build_graphs(mp20[:4], **on.cfg.graph_kwargs(), progress=False)).to(dtype=torch.float64)
    seen = {}
    on.fuse.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))  # returns None: input unchanged
    with torch.no_grad():
        out_on, out_off = on(batch), off(batch)
        # the off model's output is the on model's pooled local features, untouched by the lattice
        pooled = seen["x"][:, :off.feat_dim]
        torch.testing.assert_close(out_off, pooled)
        other = dataclasses.replace(batch, lattice_descriptor=batch.lattice_descriptor.flip(0))
        torch.testing.assert_close(off(other), out_off)
        assert (on(other) - out_on).abs().max() > 1e-4
    assert DualTowerConfig(crystal={"lattice_features": False}).crystal.lattice_features is False
    # weights of the local model (e.g. a checkpoint from before the branch) into a lattice model: clear error
    cfg = DualTowerConfig(crystal=CrystalEncoderConfig(**TINY_CRYSTAL, lattice_features=False),
                          pattern=PatternEncoderConfig(**TINY_PATTERN), embed_dim=16, projection_hidden=16)
    local_tower = DualTower(cfg)
    with pytest.raises(ValueError, match="lattice_features: false"):
        tiny_tower().load_state_dict(local_tower.state_dict())
    DualTower(cfg).load_state_dict(local_tower.state_dict())
    with pytest.raises(TypeError, match="lattice_features"):
        CrystalEncoderConfig(lattice_features="no")
