"""Checkpoints: safetensors + JSON round trip; truncated, corrupted, pickled, mismatched files refused."""

from __future__ import annotations

import json

import pytest
import torch

from DiffuX2CTLib.checkpoint import (
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from DiffuX2CTLib.diffusion.config import DiffusionConfig
from DiffuX2CTLib.errors import CheckpointError
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig


@pytest.fixture(scope="module")
def tiny():
    geometry = BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=16)
    config = NetworkConfig.tiny()
    torch.manual_seed(0)
    return config, geometry, DiffuX2CTNet(config, geometry)


def save(tmp_path, tiny, name="model"):
    config, geometry, model = tiny
    info = CheckpointInfo(network=config, diffusion=DiffusionConfig(beta_schedule="cosine"), geometry=geometry,
                          trained=True, training={"datasets": ["synthetic"], "cases": 3})
    return save_checkpoint(tmp_path / f"{name}.safetensors", model.state_dict(), info)


def test_round_trip(tmp_path, tiny):
    weights, json_path = save(tmp_path, tiny)
    assert weights.is_file() and json_path.is_file()
    loaded = load_checkpoint(json_path)  # either file names the checkpoint
    original = tiny[2].state_dict()
    for name, tensor in loaded.model.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0)
    info = loaded.info
    assert info.network == tiny[0] and info.geometry == tiny[1] and info.geometry.hash == tiny[1].hash
    assert info.diffusion.beta_schedule == "cosine" and info.trained and info.training["cases"] == 3
    assert len(info.weights_sha256) == 64 and info.created
    assert not loaded.model.training  # eval mode
    # the description alone is readable without touching the weights
    assert read_checkpoint_info(weights).network == tiny[0]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_truncated_and_corrupted_weights_are_refused(tmp_path, tiny):
    weights, _ = save(tmp_path, tiny)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="SHA-256.*truncated, corrupted"):
        load_checkpoint(weights)
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="model.safetensors: SHA-256"):
        load_checkpoint(weights)


def test_pickles_are_never_loaded(tmp_path, tiny):
    pt = tmp_path / "model.pt"
    torch.save(tiny[2].state_dict(), pt)
    with pytest.raises(CheckpointError, match="model.pt: looks like a pickled PyTorch file"):
        load_checkpoint(pt)
    # a pickle renamed to .safetensors next to a valid-looking JSON is refused by content
    weights, _ = save(tmp_path, tiny)
    weights.write_bytes(pt.read_bytes())
    with pytest.raises(CheckpointError, match="zip/pickle file, not safetensors"):
        load_checkpoint(weights)


def test_mismatched_network_is_refused(tmp_path, tiny):
    from DiffuX2CTLib.checkpoint import checkpoint_digest

    _, json_path = save(tmp_path, tiny)
    data = json.loads(json_path.read_text())
    data["network"]["base_channels"] = 16
    json_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="digest .* does not match"):  # an edit of the JSON is caught first
        load_checkpoint(json_path)
    data["digest"] = checkpoint_digest(data)  # a consistent description whose weights do not fit
    json_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"tensor '.*' has shape .* the network expects"):
        load_checkpoint(json_path)
    data["network"]["num_res_blocks"] = 2
    data["network"]["base_channels"] = 8
    data["digest"] = checkpoint_digest(data)
    json_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(json_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format_version=99), "format version 99 is not supported"),
        (lambda d: d.update(format="something-else"), "not a DiffuX2CT checkpoint"),
        (lambda d: d.pop("weights_sha256"), "lacks the field 'weights_sha256'"),
        (lambda d: d["geometry"].update(source_to_isocenter_mm=600.0), "geometry hash does not match"),
        (lambda d: d["network"].update(bogus=1), "unknown network config fields"),
    ],
)
def test_bad_descriptions_are_refused(tmp_path, tiny, edit, message):
    _, json_path = save(tmp_path, tiny)
    data = json.loads(json_path.read_text())
    edit(data)
    json_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(json_path)
    assert "model.json" in str(info.value)


def test_missing_or_unreadable_files(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="nothing.safetensors: checkpoint file not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")  # reported by the name given
    with pytest.raises(CheckpointError, match="nothing.json: checkpoint file not found"):
        load_checkpoint(tmp_path / "nothing.json")
    weights, json_path = save(tmp_path, tiny)
    json_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_checkpoint_info(weights)
    with pytest.raises(CheckpointError, match="NAME.safetensors with NAME.json"):
        load_checkpoint(tmp_path / "model.onnx")
