"""The full DiffuX2CT objective L_simple + L_proj / T with the shared DRR projector and the network."""

from __future__ import annotations

import pytest
import torch

from DiffuX2CTLib.diffusion import DiffusionConfig, NoiseSchedule, diffusion_loss
from DiffuX2CTLib.drr import DRRProjector
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.intensity import CTIntensity
from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gradients_reach_every_parameter_through_simple_and_projection_loss(tmp_path):
    geometry = BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=16)
    torch.manual_seed(0)
    model = DiffuX2CTNet(NetworkConfig.tiny(), geometry)
    projector = DRRProjector(geometry, cache_dir=tmp_path)
    intensity = CTIntensity()
    schedule = NoiseSchedule(DiffusionConfig())

    # clean volumes: a water cylinder with a bone rod, in the network's [-1, 1] range
    z, y, x = torch.meshgrid(*(torch.arange(16.0),) * 3, indexing="ij")
    hu = torch.where((x - 8) ** 2 + (y - 8) ** 2 < 36, 0.0, -1000.0)
    hu = torch.where((x - 10) ** 2 + (y - 6) ** 2 < 4, 1200.0, hu)
    x0 = intensity.normalize(hu)[None, None].repeat(2, 1, 1, 1, 1)
    xrays = projector.radiograph(intensity.denormalize(x0))  # DRRs condition the model, as in training

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reached = {name: False for name, _ in model.named_parameters()}
    reached_by_proj = {name: False for name, _ in model.named_parameters()}
    for step in range(3):
        opt.zero_grad()
        condition = model.encode_condition(xrays)
        # the x0 estimate is not clipped on its way to HU (as in the paper), so every voxel gets a
        # gradient; the projector's HU -> mu clamps negative attenuation itself
        terms = diffusion_loss(lambda x_t, t: model(x_t, t, condition), x0, schedule, project=projector,
                               to_projectable=lambda x: intensity.denormalize(x, clip=False),
                               t=torch.tensor([50, 400]))
        assert terms.proj.dtype == torch.float32 and terms.proj > 0 and terms.simple > 0
        torch.testing.assert_close(terms.total, terms.simple + terms.proj / 1000)
        # the projection term on its own reaches the network through the projector's backward
        (proj_grads) = torch.autograd.grad(terms.proj, list(model.parameters()), retain_graph=True, allow_unused=True)
        for (name, _), g in zip(model.named_parameters(), proj_grads):
            reached_by_proj[name] |= g is not None and bool(g.abs().sum() > 0)
        terms.total.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            reached[name] |= bool(p.grad.abs().sum() > 0)
        opt.step()
    assert not [n for n, ok in reached.items() if not ok]
    assert not [n for n, ok in reached_by_proj.items() if not ok]
