"""DiffusionConfig, NoiseSchedule and the DiffuX2CT training loss."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from DiffuX2CTLib.diffusion import DiffusionConfig, LossTerms, NoiseSchedule, diffusion_loss
from DiffuX2CTLib.errors import DiffuX2CTError, InputError

D = 6  # cube side of the toy volumes


def two_view_project(volume: torch.Tensor) -> torch.Tensor:
    """A linear, differentiable stand-in for the DRR projector: (B, 1, D, D, D) -> (B, 2, D, D)."""
    return torch.cat([volume.sum(dim=2), volume.sum(dim=3)], dim=1)


class TinyNet(nn.Module):
    """A 1x1x1 convolution: enough parameters to see gradients, no condition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and t.dtype == torch.int64
        return self.conv(x)


def volumes(batch: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, D, D, D, generator=g) * 2 - 1).to(dtype)


# --- config -------------------------------------------------------------------------------------
def test_config_defaults_and_round_trip() -> None:
    config = DiffusionConfig()
    assert (config.num_train_timesteps, config.beta_schedule, config.prediction_type) == (1000, "linear", "epsilon")
    assert config.proj_loss_weight is None and config.proj_weight == pytest.approx(1e-3)
    assert config.clip_sample is True
    custom = DiffusionConfig(num_train_timesteps=200, beta_schedule="cosine", prediction_type="v_prediction",
                             proj_loss_weight=0.25, clip_sample=False)
    data = json.loads(json.dumps(custom.to_dict()))
    assert DiffusionConfig.from_dict(data) == custom
    assert DiffusionConfig.from_dict({}) == DiffusionConfig()
    assert DiffusionConfig(beta_schedule="squaredcos_cap_v2").beta_schedule == "cosine"
    assert DiffusionConfig(beta_schedule="cosine").diffusers_beta_schedule == "squaredcos_cap_v2"
    assert DiffusionConfig(proj_loss_weight=2).proj_weight == 2.0
    assert custom.replace(num_train_timesteps=10).proj_weight == 0.25


@pytest.mark.parametrize("changes,match", [
    ({"num_train_timesteps": 0}, "num_train_timesteps"),
    ({"num_train_timesteps": 10.0}, "num_train_timesteps"),
    ({"num_train_timesteps": True}, "num_train_timesteps"),
    ({"beta_schedule": "quadratic"}, "beta_schedule"),
    ({"prediction_type": "sample"}, "prediction_type"),
    ({"proj_loss_weight": -1.0}, "proj_loss_weight"),
    ({"proj_loss_weight": float("nan")}, "proj_loss_weight"),
    ({"clip_sample": 1}, "clip_sample"),
    ({"beta_start": 0.1, "beta_end": 0.01}, "beta_start"),
    ({"beta_end": 1.5}, "beta_end"),
])
def test_config_validation(changes: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        DiffusionConfig(**changes)
    with pytest.raises(InputError, match=match):
        DiffusionConfig.from_dict(changes)


def test_config_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(InputError, match="unknown diffusion config fields \\['steps'\\]"):
        DiffusionConfig.from_dict({"steps": 50})
    with pytest.raises(DiffuX2CTError):
        DiffusionConfig.from_dict([("num_train_timesteps", 10)])


def test_config_and_package_import_without_torch() -> None:
    code = ("import sys; from DiffuX2CTLib.diffusion import DiffusionConfig; DiffusionConfig.from_dict({}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))


# --- schedule -----------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 250])
def test_schedule_matches_diffusers(schedule: str, T: int) -> None:
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    config = DiffusionConfig(num_train_timesteps=T, beta_schedule=schedule)
    ours = NoiseSchedule(config)
    assert ours.alphas_cumprod.dtype == torch.float64 and ours.betas.dtype == torch.float64
    assert ours.alphas_cumprod.shape == (T,)
    for cls in (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler):
        theirs = cls(num_train_timesteps=T, beta_schedule=config.diffusers_beta_schedule)
        assert torch.equal(ours.betas, theirs.betas.double())
        assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod.double())  # bit-identical
    abar = ours.alphas_cumprod
    assert torch.all(abar[1:] < abar[:-1]) and 0 < float(abar[-1]) < float(abar[0]) < 1
    if T == 1000 or schedule == "cosine":  # the linear betas are not rescaled with T (as in diffusers)
        assert float(abar[-1]) < 1e-3


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_q_sample_and_predictions_are_inverse(prediction: str) -> None:
    schedule = NoiseSchedule(DiffusionConfig(prediction_type=prediction))
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 1, 3, 4, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 500, 998, 999])
    x_t = schedule.q_sample(x0, t, noise)
    a = schedule.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(x_t, a * x0 + (1 - a * a).sqrt() * noise)
    output = noise if prediction == "epsilon" else schedule.v_target(x0, noise, t)
    torch.testing.assert_close(schedule.training_target(x0, noise, t), output)
    torch.testing.assert_close(schedule.predict_x0(x_t, t, output), x0, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(schedule.predict_eps(x_t, t, output), noise, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(schedule.model_output_from_x0(x_t, t, x0), output, atol=1e-9, rtol=1e-9)
    # v = a eps - b x0 and the identity x0 = a x_t - b v
    v = schedule.v_target(x0, noise, t)
    torch.testing.assert_close(v, a * noise - (1 - a * a).sqrt() * x0)
    # scalar t broadcasts; float32 in, float32 out
    x32 = schedule.q_sample(x0.float(), 10, noise.float())
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32, schedule.q_sample(x0, torch.full((5,), 10), noise).float())


def test_schedule_rejects_bad_timesteps() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_train_timesteps=10))
    x = torch.zeros(2, 1, 2, 2, 2)
    with pytest.raises(InputError, match="in \\[0, 9\\]"):
        schedule.q_sample(x, torch.tensor([0, 10]), x)
    with pytest.raises(InputError, match="shape \\(2,\\)"):
        schedule.q_sample(x, torch.tensor([1, 2, 3]), x)
    with pytest.raises(InputError, match="integer"):
        schedule.q_sample(x, torch.tensor([0.5, 1.0]), x)


# --- loss ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_oracle_model_has_zero_loss(prediction: str) -> None:
    schedule = NoiseSchedule(DiffusionConfig(prediction_type=prediction))
    x0 = volumes(4)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 250, 700, 999])
    truth = noise if prediction == "epsilon" else schedule.v_target(x0, noise, t)
    terms = diffusion_loss(lambda x, tt: truth, x0, schedule, project=two_view_project, t=t, noise=noise)
    assert isinstance(terms, LossTerms)
    assert terms.simple.item() == 0.0
    # float32 round-off of x_t, amplified by 1/sqrt(abar_999) = 156 for epsilon, summed over D voxels
    assert terms.proj.item() < 1e-4
    assert terms.total.item() == pytest.approx(terms.simple.item() + terms.proj.item() / 1000)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_wrong_model_has_positive_terms(prediction: str) -> None:
    schedule = NoiseSchedule(DiffusionConfig(prediction_type=prediction))
    terms = diffusion_loss(lambda x, t: torch.zeros_like(x), volumes(), schedule, project=two_view_project,
                           generator=torch.Generator().manual_seed(0))
    assert terms.simple.item() > 0.1 and terms.proj.item() > 0.1
    assert terms.total.item() == pytest.approx(terms.simple.item() + terms.proj.item() / 1000, rel=1e-6)
    assert set(terms.detach()) == {"total", "simple", "proj"}


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_gradients_flow_through_both_terms(prediction: str) -> None:
    schedule = NoiseSchedule(DiffusionConfig(prediction_type=prediction))
    net = TinyNet()
    terms = diffusion_loss(net, volumes(), schedule, project=two_view_project, to_projectable=lambda v: 1000 * v,
                           generator=torch.Generator().manual_seed(0))
    params = list(net.parameters())
    for term in (terms.simple, terms.proj):
        grads = torch.autograd.grad(term, params, retain_graph=True)
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    terms.total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_lambda_defaults_to_one_over_T_and_can_be_set() -> None:
    x0 = volumes()
    kwargs = dict(project=two_view_project, t=torch.tensor([3, 40, 90]),
                  noise=torch.randn(x0.shape, generator=torch.Generator().manual_seed(4)))
    model = lambda x, t: 0.5 * x  # noqa: E731
    default = diffusion_loss(model, x0, NoiseSchedule(DiffusionConfig(num_train_timesteps=100)), **kwargs)
    assert default.total.item() == pytest.approx(default.simple.item() + default.proj.item() / 100, rel=1e-6)
    weighted = diffusion_loss(model, x0, NoiseSchedule(DiffusionConfig(num_train_timesteps=100, proj_loss_weight=0.5)), **kwargs)
    assert weighted.simple.item() == default.simple.item() and weighted.proj.item() == default.proj.item()
    assert weighted.total.item() == pytest.approx(default.simple.item() + 0.5 * default.proj.item(), rel=1e-6)


def test_without_projector_proj_is_zero_and_to_projectable_scales() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    x0 = volumes()
    kwargs = dict(generator=None, t=torch.tensor([5, 500, 900]), noise=torch.randn(x0.shape, generator=torch.Generator().manual_seed(6)))
    model = lambda x, t: 0.9 * x  # noqa: E731
    plain = diffusion_loss(model, x0, schedule, **kwargs)
    assert plain.proj.item() == 0.0 and plain.total.item() == plain.simple.item()
    unit = diffusion_loss(model, x0, schedule, project=two_view_project, **kwargs)
    hu = diffusion_loss(model, x0, schedule, project=two_view_project, to_projectable=lambda v: 1000 * v - 24, **kwargs)
    assert hu.proj.item() == pytest.approx(1000 * unit.proj.item(), rel=1e-4)  # linear projector


def test_generator_makes_t_and_noise_reproducible() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    x0 = volumes()
    model = lambda x, t: x * (t.view(-1, 1, 1, 1, 1) / 1000.0)  # noqa: E731

    def run(seed: int) -> float:
        return diffusion_loss(model, x0, schedule, project=two_view_project, generator=torch.Generator().manual_seed(seed)).total.item()

    assert run(3) == run(3) != run(4)


def test_projection_loss_runs_in_float32_under_bfloat16_autocast() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    net = TinyNet()
    seen: list[tuple[torch.dtype, bool, torch.dtype]] = []
    weights = torch.randn(D, 2 * D, generator=torch.Generator().manual_seed(0))  # float32

    def project(volume: torch.Tensor) -> torch.Tensor:
        # a matmul: autocast would run it in bfloat16 if it were still enabled
        out = two_view_project(volume) @ weights[:, :D]
        seen.append((volume.dtype, torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    x0 = volumes(dtype=torch.bfloat16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert net(x0.float(), torch.zeros(3, dtype=torch.int64)).dtype == torch.bfloat16  # autocast is on
        terms = diffusion_loss(net, x0, schedule, project=project, generator=torch.Generator().manual_seed(0))
    assert seen == [(torch.float32, False, torch.float32)] * 2  # prediction and reference
    assert terms.proj.dtype == terms.simple.dtype == terms.total.dtype == torch.float32
    terms.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_loss_shape_errors() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    x0 = volumes()
    with pytest.raises(InputError, match="model returned shape"):
        diffusion_loss(lambda x, t: x[:, :, :2], x0, schedule)
    with pytest.raises(InputError, match="noise has shape"):
        diffusion_loss(lambda x, t: x, x0, schedule, noise=torch.zeros(2))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weighting_is_min_snr_times_the_x0_error(prediction):
    """Hang et al. 2023: the weighted loss on the network's target equals min(SNR_t, gamma) |x0_hat - x0|^2."""
    config = DiffusionConfig(beta_schedule="cosine", prediction_type=prediction, loss_weighting="min_snr",
                             min_snr_gamma=5.0)
    schedule = NoiseSchedule(config)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 100, 500, 900])
    x0 = torch.randn(4, 1, 3, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = schedule.q_sample(x0, t, noise)
    target = schedule.training_target(x0, noise, t)
    output = target + 0.1 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    weighted = (schedule.loss_weight(t, x0) * (output - target) ** 2).sum(dim=(1, 2, 3, 4))
    abar = schedule.alphas_cumprod[t]
    snr = (abar / (1 - abar)).clamp(max=5.0).view(-1, 1, 1, 1, 1)
    expected = (snr * (schedule.predict_x0(x_t, t, output) - x0) ** 2).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(weighted, expected, rtol=1e-9, atol=1e-12)
    uniform = NoiseSchedule(config.replace(loss_weighting="uniform"))
    assert torch.equal(uniform.loss_weight(t, x0), torch.ones(4, 1, 1, 1, 1, dtype=torch.float64))


def test_loss_weighting_is_validated():
    with pytest.raises(InputError, match="loss_weighting must be one of"):
        DiffusionConfig(loss_weighting="p2")
    with pytest.raises(InputError, match="min_snr_gamma must be a positive number"):
        DiffusionConfig(loss_weighting="min_snr", min_snr_gamma=0.0)
