"""The training stack: configs, loss reduction, exact resume after SIGTERM/SIGKILL, and DDP."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training_helpers import make_tiny_cache, tiny_config_text

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    return make_tiny_cache(tmp_path_factory.mktemp("tiny-cache"))


def _write_config(tmp_path: Path, cache: Path, run_dir: Path, num_workers: int = 0, **train) -> Path:
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(tiny_config_text(cache, run_dir, num_workers, **train))
    return path


def _train_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.train", "--config", str(config), "--no-progress", *extra]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _final_tensors(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(run_dir / "checkpoints" / f"step_{step:08d}" / "tensors.safetensors"))
    return {k: v for k, v in tensors.items() if not k.startswith("rng/")}


def _assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    assert any(k.startswith("model/") for k in a) and any(k.startswith("ema/") for k in a)
    assert any(k.startswith("optim/") for k in a)


# --- configs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["paper", "clinical", "demo"])
def test_bundled_configs_validate(name):
    from training.config import load_config

    config = load_config(name)
    network = config.build_network_config()
    assert network.volume_size == config.build_geometry().volume_shape[0]
    assert config.name == name


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr'"),
        ("optim.lr=fast", "config key 'optim.lr': expected a number, got 'fast'"),
        ("train.bf16=1", "config key 'train.bf16': expected true or false, got 1"),
        ("network.base_channel=8", "unknown config key 'network.base_channel'"),
        ("network.channel_mult=[1, x]", "config key 'network.channel_mult[1]': expected an integer"),
        ("diffusion.prediction_type=x0", "prediction_type must be one of"),
        ("data.batch_size=0", "config key 'data.batch_size': must be >= 1"),
        ("geometry.preset=mri", "unknown preset 'mri'"),
        ("objective=gan", "config key 'objective'"),
        ("colour=blue", "unknown config key 'colour'"),
    ],
)
def test_config_errors_name_the_key(override, message):
    from DiffuX2CTLib.errors import InputError
    from training.config import load_config

    with pytest.raises(InputError) as info:
        load_config("demo", [override])
    assert message in str(info.value)
    assert "demo.yaml" in str(info.value)


def test_numbers_in_exponent_form_are_numbers():
    from training.config import load_config

    config = load_config("demo", ["optim.lr=5e-4", "optim.eps=1E-8"])
    assert config.optim.lr == 5e-4 and config.optim.eps == 1e-8


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [1, 2]}\n")
    result = _run(_train_cmd(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.yaml" in lines[0] and "optim.lr" in lines[0]
    missing = _run(_train_cmd(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "config file not found" in missing.stderr


# --- learning -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_a_tiny_run_reduces_the_loss(tiny_cache, tmp_path, bf16):
    """fp32 and bf16 autocast (the learning benchmark's precision on CPUs with bf16 hardware) both learn."""
    from training.config import load_config
    from training.trainer import train

    config = load_config(_write_config(tmp_path, tiny_cache, tmp_path / "learn", max_steps=40, checkpoint_every=0),
                         ["augment.enabled=false", f"train.bf16={'true' if bf16 else 'false'}"])
    result = train(config, progress=False)
    assert result.finished and result.step == 40
    with open(tmp_path / "learn" / "train_log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, (first, last)


def test_init_from_starts_a_run_from_an_exported_model(tiny_cache, tmp_path):
    """train.init_from: fine-tuning starts from the checkpoint's weights; another network is refused."""
    from DiffuX2CTLib.checkpoint import save_checkpoint
    from DiffuX2CTLib.errors import InputError
    from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig
    from training.config import load_config
    from training.state import inference_parts
    from training.trainer import train

    first = load_config(_write_config(tmp_path, tiny_cache, tmp_path / "first", max_steps=3, checkpoint_every=0),
                        ["augment.enabled=false"])
    train(first, progress=False)
    weights, info = inference_parts(tmp_path / "first", "last")
    exported, _ = save_checkpoint(tmp_path / "exported.safetensors", weights, info)

    # lr 1e-9: one Adam step moves each weight by about 1e-9 from where init_from put them
    tuned = load_config(_write_config(tmp_path, tiny_cache, tmp_path / "tuned", max_steps=1, checkpoint_every=0),
                        ["augment.enabled=false", "optim.lr=1.0e-9", "optim.weight_decay=0.0", f"train.init_from={exported}"])
    train(tuned, progress=False)
    after = _final_tensors(tmp_path / "tuned", 1)
    for prefix in ("model/", "ema/"):
        for name, value in weights.items():
            torch.testing.assert_close(after[prefix + name], value, rtol=0, atol=1e-7, msg=prefix + name)
    fresh = load_config(_write_config(tmp_path, tiny_cache, tmp_path / "fresh", max_steps=1, checkpoint_every=0),
                        ["augment.enabled=false", "optim.lr=1.0e-9", "optim.weight_decay=0.0"])
    train(fresh, progress=False)
    start = _final_tensors(tmp_path / "fresh", 1)
    assert max(float((start["model/" + k] - v).abs().max()) for k, v in weights.items()) > 1e-3  # a fresh start differs

    other = NetworkConfig.tiny().replace(base_channels=NetworkConfig.tiny().base_channels * 2)
    wide, _ = save_checkpoint(tmp_path / "wide.safetensors", DiffuX2CTNet(other, info.geometry).state_dict(),
                              dataclasses.replace(info, network=other))
    bad = load_config(_write_config(tmp_path, tiny_cache, tmp_path / "bad", max_steps=1, checkpoint_every=0),
                      ["augment.enabled=false", f"train.init_from={wide}"])
    with pytest.raises(InputError, match="train.init_from.*network differs"):
        train(bad, progress=False)


# --- exact resume -------------------------------------------------------------------------------
def _wait_for(predicate, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _logged_steps(run_dir: Path) -> int:
    path = run_dir / "train_log.csv"
    if not path.is_file():
        return 0
    return max(0, len(path.read_text().strip().splitlines()) - 1)


@pytest.fixture(scope="module")
def uninterrupted(tiny_cache, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    run_dir = tmp / "reference"
    result = _run(_train_cmd(_write_config(tmp, tiny_cache, run_dir)))
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.parametrize("workers", [0, 1])
def test_sigterm_saves_and_resume_is_bit_identical(tiny_cache, tmp_path, uninterrupted, workers):
    # with a DataLoader worker too: per-sample seeds make the data independent of the workers
    run_dir = tmp_path / "sigterm"
    config = _write_config(tmp_path, tiny_cache, run_dir, num_workers=workers, checkpoint_every=0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_train_cmd(config), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for(lambda: _logged_steps(run_dir) >= 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err
    from training.state import list_checkpoints

    saved = list_checkpoints(run_dir)
    assert len(saved) == 1 and 3 <= int(saved[0].name.split("_")[1]) < 12  # saved where it stopped
    result = _run(_train_cmd(config))
    assert result.returncode == 0, result.stderr
    assert "resumed at step" in result.stderr
    _assert_bit_identical(_final_tensors(run_dir, 12), _final_tensors(uninterrupted, 12))
    # the log describes one continuous run
    with open(run_dir / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 13))


def test_sigkill_then_resume_from_the_last_checkpoint_is_bit_identical(tiny_cache, tmp_path, uninterrupted):
    run_dir = tmp_path / "sigkill"
    config = _write_config(tmp_path, tiny_cache, run_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_train_cmd(config), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _wait_for(lambda: (run_dir / "checkpoints" / "step_00000004" / "state.json").is_file())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    result = _run(_train_cmd(config))
    assert result.returncode == 0, result.stderr
    assert "resumed at step" in result.stderr
    _assert_bit_identical(_final_tensors(run_dir, 12), _final_tensors(uninterrupted, 12))
    assert all(p.name.startswith("step_") for p in (run_dir / "checkpoints").iterdir()), leftovers


def test_a_corrupted_checkpoint_is_refused(tiny_cache, tmp_path, uninterrupted):
    import shutil

    from DiffuX2CTLib.errors import CheckpointError
    from training.state import read_training_checkpoint

    copy = tmp_path / "copy"
    shutil.copytree(uninterrupted / "checkpoints" / "step_00000012", copy)
    with open(copy / "tensors.safetensors", "r+b") as f:
        f.seek(-64, os.SEEK_END)
        f.write(b"\0" * 64)
    with pytest.raises(CheckpointError, match="SHA-256"):
        read_training_checkpoint(copy)


# --- DDP ----------------------------------------------------------------------------------------
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tiny_cache, tmp_path):
    import json

    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    steps = 3
    single = _run(_train_cmd(_write_config(tmp_path, tiny_cache, single_dir, max_steps=steps)))
    assert single.returncode == 0, single.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train", "--config", str(_write_config(tmp_path, tiny_cache, ddp_dir, max_steps=steps)),
           "--no-progress"]
    ddp = _run(cmd, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 process(es)" in ddp.stderr
    state = json.loads((ddp_dir / "checkpoints" / f"step_{steps:08d}" / "state.json").read_text())
    fingerprints = state["extra"]["rank_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]  # identical on both ranks
    assert state["world_size"] == 2
    a, b = _final_tensors(single_dir, steps), _final_tensors(ddp_dir, steps)
    for name in a:
        if name.startswith(("model/", "ema/")):
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
