"""DiffuX2CT network: config, shapes, tri-plane alignment, implicit decoder, Swin/SDPA, gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.networks.nets.swin_unetr import SwinTransformerBlock, WindowAttention, compute_mask

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.network import (
    AxialFusion,
    DiffuX2CTNet,
    ImplicitDecoder,
    NetworkConfig,
    ProjectiveAligner,
    SDPAWindowAttention,
    SwinStage3D,
    Triplanes,
    grid_points,
)
from DiffuX2CTLib.network import blocks as blocks_module


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The models here are tiny: one intra-op thread is as fast and does not collapse when other
    processes share the cores (OpenMP oversubscription). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, **changes) -> DiffuX2CTNet:
    config = NetworkConfig.tiny().replace(**changes)
    geometry = BiplanarGeometry.preset("x2ct", volume_size=config.volume_size, xray_size=config.xray_size)
    torch.manual_seed(seed)
    return DiffuX2CTNet(config, geometry)


def random_inputs(config: NetworkConfig, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n, m = config.volume_size, config.xray_size
    xrays = torch.rand(batch, 2, m, m, generator=g) * 2 - 1
    x_t = torch.randn(batch, config.in_channels, n, n, n, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return xrays, x_t, t


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 3) -> None:
    """Add noise to every parameter so zero-initialised layers do not hide gradient paths."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# --- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_config_round_trip(preset):
    config = getattr(NetworkConfig, preset)()
    data = json.loads(json.dumps(config.to_dict()))
    assert NetworkConfig.from_dict(data) == config


def test_config_rejects_unknown_and_invalid_fields():
    data = NetworkConfig.tiny().to_dict()
    data["prediction_type"] = "epsilon"
    with pytest.raises(InputError, match="prediction_type"):
        NetworkConfig.from_dict(data)
    with pytest.raises(InputError, match="attention_levels"):
        NetworkConfig.tiny().replace(attention_levels=(True, False))
    with pytest.raises(InputError, match="num_heads"):
        NetworkConfig.tiny().replace(num_heads=3)


def test_geometry_mismatch_is_a_clear_error():
    config = NetworkConfig.tiny()
    with pytest.raises(InputError, match="volume_size 16"):
        DiffuX2CTNet(config, BiplanarGeometry.preset("x2ct", volume_size=32, xray_size=16))
    with pytest.raises(InputError, match="xray_size 16"):
        DiffuX2CTNet(config, BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=32))


# --- shapes, dtypes, determinism ------------------------------------------------------------
def test_tiny_shapes_and_dtypes():
    model = tiny_model()
    config = model.config
    xrays, x_t, t = random_inputs(config)
    planes = model.encode_triplanes(xrays)
    c = config.triplane_channels
    assert planes.coronal.shape == (2, c, 16, 16) and planes.sagittal.shape == (2, c, 16, 16)
    assert planes.axial.shape == (2, c, 16, 16)
    cond = model.encode_condition(xrays)
    assert cond.shape == (2, config.condition_channels, 16, 16, 16) and cond.dtype == torch.float32
    for steps in (t, t.float() + 0.5, torch.tensor(7)):
        out = model(x_t, steps, cond)
        assert out.shape == x_t.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    with pytest.raises(InputError, match="radiographs"):
        model.encode_condition(xrays[:, :1])
    with pytest.raises(InputError, match="condition"):
        model(x_t, t, cond[:, :, :8])


def test_other_sizes_and_window_padding():
    """24^3 volume from 20^2 radiographs: U-Net levels 24, 12, 6; the 6^3 level is padded to 8^3
    for the 4^3 windows inside MONAI's Swin block and cropped back."""
    model = tiny_model(volume_size=24, xray_size=20, base_channels=4, norm_num_groups=2)
    xrays, x_t, t = random_inputs(model.config, batch=1)
    with torch.no_grad():
        cond = model.encode_condition(xrays)
        out = model(x_t, t, cond)
    assert cond.shape == (1, 4, 24, 24, 24) and out.shape == (1, 1, 24, 24, 24)
    assert torch.isfinite(out).all()


def test_determinism():
    a, b = tiny_model(seed=5), tiny_model(seed=5)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    perturb_(a), perturb_(b)
    xrays, x_t, t = random_inputs(a.config)
    with torch.no_grad():
        out_a = a(x_t, t, a.encode_condition(xrays))
        out_b = b(x_t, t, b.encode_condition(xrays))
    assert torch.equal(out_a, out_b)
    assert not all(torch.equal(p, q) for p, q in zip(tiny_model(seed=6).parameters(), b.parameters()))


# --- tri-plane alignment --------------------------------------------------------------------
def aniso_geometry() -> BiplanarGeometry:
    """Non-cubic volume and detector so that swapped axes or a missing magnification show."""
    return BiplanarGeometry(
        name="aniso", source_to_isocenter_mm=500.0, source_to_detector_mm=900.0,
        detector_shape=(40, 48), detector_spacing_mm=(5.0, 4.0),
        volume_shape=(12, 16, 20), volume_spacing_mm=(10.0, 8.0, 6.0),
    )


def gaussian_spot(shape, center, sigma=0.7) -> torch.Tensor:
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r0, c0 = center
    return torch.from_numpy(np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * sigma**2)).astype(np.float32))


def bilinear(image: np.ndarray, rc) -> float:
    r0, c0 = int(np.floor(rc[0])), int(np.floor(rc[1]))
    fr, fc = rc[0] - r0, rc[1] - c0
    return float(sum(image[r0 + a, c0 + b] * (fr if a else 1 - fr) * (fc if b else 1 - fc)
                     for a in (0, 1) for b in (0, 1)))


@pytest.mark.parametrize("geometry", [aniso_geometry(), BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=16)],
                         ids=["aniso", "x2ct16"])
def test_projective_alignment_puts_spots_at_their_voxels(geometry):
    aligner = ProjectiveAligner(geometry)
    z, y, x = geometry.voxel_centers_mm()
    d, h, w = geometry.volume_shape
    rows, cols = geometry.detector_shape
    for k, j, i in [(2, 4, 3), (d - 3, h - 4, w // 2 + 2), (d // 2, 2, w - 5)]:
        # AP: a point on the mid-coronal plane (y = 0) -> coronal (k, i)
        rc_ap = geometry.project_points("ap", np.array([x[i], 0.0, z[k]]))
        rc_lat = geometry.project_points("lateral", np.array([0.0, y[j], z[k]]))
        ap = gaussian_spot((rows, cols), rc_ap)[None, None]
        lat = gaussian_spot((rows, cols), rc_lat)[None, None]
        coronal, sagittal = aligner(ap, lat)
        assert coronal.shape == (1, 1, d, w) and sagittal.shape == (1, 1, d, h)
        assert np.unravel_index(int(coronal[0, 0].argmax()), (d, w)) == (k, i)
        assert np.unravel_index(int(sagittal[0, 0].argmax()), (d, h)) == (k, j)
        # and the value is the detector image bilinearly interpolated at the exact projection
        assert float(coronal[0, 0, k, i]) == pytest.approx(bilinear(ap[0, 0].numpy(), rc_ap), abs=1e-5)
        assert float(sagittal[0, 0, k, j]) == pytest.approx(bilinear(lat[0, 0].numpy(), rc_lat), abs=1e-5)
    if geometry.name == "aniso":
        # the cone-beam magnification matters: a parallel (unmagnified) mapping would miss by pixels
        naive_col = x[w - 5] / geometry.detector_spacing_mm[1] + (cols - 1) / 2
        assert abs(naive_col - geometry.project_points("ap", np.array([x[w - 5], 0.0, 0.0]))[1]) > 2


def test_axial_fusion_equals_explicit_softmax_over_z():
    torch.manual_seed(0)
    b, c, d, h, w, heads = 2, 6, 5, 4, 7, 3
    fusion = AxialFusion(c, heads)
    coronal, sagittal = torch.randn(b, c, d, w), torch.randn(b, c, d, h) * 3
    out = fusion(coronal, sagittal)
    pc, ps = fusion.coronal_proj(coronal), fusion.sagittal_proj(sagittal)
    logits = pc[:, :heads, :, None, :] + ps[:, :heads, :, :, None]  # (b, heads, d, h, w)
    values = (pc[:, heads:, :, None, :] + ps[:, heads:, :, :, None]).reshape(b, heads, c // heads, d, h, w)
    weights = torch.softmax(logits, dim=2).unsqueeze(2)
    expected = fusion.out((weights * values).sum(dim=3).reshape(b, c, h, w))
    assert out.shape == (b, c, h, w)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# --- implicit decoder -----------------------------------------------------------------------
def test_decoder_samples_texels_exactly_at_plane_resolution():
    """At the planes' own resolution the voxel centres hit the texel centres (align_corners=False)."""
    torch.manual_seed(0)
    d, h, w, c = 6, 5, 4, 2
    planes = Triplanes(torch.randn(1, c, d, w), torch.randn(1, c, d, h), torch.randn(1, c, h, w))
    pts = grid_points((d, h, w)).unsqueeze(0)
    feats = ImplicitDecoder.sample_planes(planes, pts).reshape(d, h, w, 3 * c)
    k, j, i = 4, 1, 3
    expected = torch.cat([planes.coronal[0, :, k, i], planes.sagittal[0, :, k, j], planes.axial[0, :, j, i]])
    torch.testing.assert_close(feats[k, j, i], expected)


def test_decoder_any_resolution_and_chunking():
    torch.manual_seed(0)
    decoder = ImplicitDecoder(3, 5, num_frequencies=2, width=16, depth=2, chunk_size=1000)
    planes = Triplanes(torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16))
    for size in (8, 16, 24, (8, 12, 20)):
        out = decoder.decode_grid(planes, size)
        shape = (size,) * 3 if isinstance(size, int) else size
        assert out.shape == (2, 5, *shape)
        torch.testing.assert_close(decoder.decode_grid(planes, size, chunk_size=333), out)
    # grid values are the point-wise decoder at the same voxel centres
    full = decoder.decode_grid(planes, (8, 12, 20))
    pts = grid_points((8, 12, 20))
    point_wise = decoder(planes, pts[[0, 777, 1919]])  # (2, 3, 5)
    flat = full.flatten(2).transpose(1, 2)[:, [0, 777, 1919]]
    torch.testing.assert_close(point_wise, flat)


# --- shifted-window attention ---------------------------------------------------------------
def test_sdpa_window_attention_equals_monai():
    torch.manual_seed(0)
    dim, heads, window = 8, 2, (4, 4, 4)
    ours = SDPAWindowAttention(dim, heads, window, qkv_bias=True)
    ref = WindowAttention(dim, heads, window, qkv_bias=True)
    with torch.no_grad():
        ours.relative_position_bias_table.normal_()
    ref.load_state_dict(ours.state_dict())
    mask = compute_mask([8, 8, 8], window, (2, 2, 2), None)  # (8 windows, 64, 64)
    x = torch.randn(2 * mask.shape[0], 64, dim)
    for m in (None, mask):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = ours(xa, m), ref(xb, m)
        torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)
        out_a.square().sum().backward(), out_b.square().sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.relative_position_bias_table.grad, ref.relative_position_bias_table.grad,
                                   rtol=1e-4, atol=1e-5)
        ours.zero_grad(), ref.zero_grad()


def test_swin_stage_equals_monai_blocks_with_shift_and_padding():
    """The stage (SDPA attention) == MONAI blocks with their original attention, on a volume the
    window does not divide (padded inside MONAI's block), windows shifted on the odd block."""
    torch.manual_seed(0)
    stage = SwinStage3D(dim=8, num_heads=2, window_size=4, depth=2)
    x = torch.randn(2, 8, 10, 7, 9)
    refs = []
    for block in stage.blocks:
        ref = SwinTransformerBlock(8, 2, block.window_size, block.shift_size, mlp_ratio=2.0, qkv_bias=True)
        assert type(ref.attn) is WindowAttention
        with torch.no_grad():
            block.attn.relative_position_bias_table.normal_()
        ref.load_state_dict(block.state_dict())
        refs.append(ref)
    mask = compute_mask([12, 8, 12], (4, 4, 4), (2, 2, 2), None)
    h = x.permute(0, 2, 3, 4, 1)
    for ref in refs:
        h = ref(h, mask)
    out = stage(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, h.permute(0, 4, 1, 2, 3), rtol=1e-5, atol=1e-5)


def test_shifted_windows_alternate():
    stage = SwinStage3D(dim=8, num_heads=2, window_size=4, depth=4)
    assert [b.shift_size for b in stage.blocks] == [(0, 0, 0), (2, 2, 2), (0, 0, 0), (2, 2, 2)]
    assert all(isinstance(b.attn, SDPAWindowAttention) for b in stage.blocks)
    model = tiny_model()
    stages = [m for m in model.modules() if isinstance(m, SwinStage3D)]
    assert stages and all(s.blocks[0].shift_size == (0, 0, 0) and s.blocks[1].shift_size == (2, 2, 2) for s in stages)
    # the shift changes the result: unshifted vs shifted second block on the same weights
    x = torch.randn(1, 8, 8, 8, 8)
    with torch.no_grad():
        shifted = stage.blocks[1](x.permute(0, 2, 3, 4, 1), stage.shift_mask((8, 8, 8), x.device))
        stage.blocks[1].shift_size = (0, 0, 0)
        unshifted = stage.blocks[1](x.permute(0, 2, 3, 4, 1), None)
    assert not torch.allclose(shifted, unshifted, atol=1e-4)


# --- gradients ------------------------------------------------------------------------------
def test_activation_checkpointing_gives_same_gradients(monkeypatch):
    plain = tiny_model(seed=2)
    perturb_(plain)
    ckpt = tiny_model(seed=2, use_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    original = blocks_module.checkpoint
    monkeypatch.setattr(blocks_module, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    xrays, x_t, t = random_inputs(plain.config)
    losses = []
    for model in (plain, ckpt):
        out = model(x_t, t, model.encode_condition(xrays))
        loss = (out - x_t).square().mean()
        loss.backward()
        losses.append(loss.detach())
    assert calls, "checkpointing was not used"
    torch.testing.assert_close(losses[0], losses[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_gradients_reach_every_parameter():
    """Zero-initialised output convolutions block some paths at step 0; within three optimiser
    steps every parameter must have received a non-zero gradient."""
    model = tiny_model(seed=4)
    xrays, x_t, t = random_inputs(model.config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reached = {name: False for name, _ in model.named_parameters()}
    for _ in range(3):
        opt.zero_grad()
        out = model(x_t, t, model.encode_condition(xrays))
        (out - x_t).square().mean().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            reached[name] |= bool(p.grad.abs().sum() > 0)
        opt.step()
    missing = [name for name, ok in reached.items() if not ok]
    assert not missing, missing
