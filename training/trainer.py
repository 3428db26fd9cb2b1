"""The training loop: one process, or one of several under ``torchrun`` (DDP).

Per step: draw the global batch of (augmented) HU volumes (``training.dataset``), render their
AP and lateral radiographs on the device (``training.render``), normalise the volumes to
[-1, 1], evaluate the objective (``training.objective``: DiffuX2CT's ``L_simple + lambda L_proj``
or the regression baseline) under optional bf16 autocast, back-propagate (DDP averages the
gradients), clip the gradient norm, step AdamW at the warm-up + cosine learning rate, update the
EMA. Every ``log_every`` steps the losses (averaged over processes) go to the CSV/TensorBoard
logs and the progress bar; every ``val_every`` steps the EMA network reconstructs the fixed
validation subset with a fast sampler; every ``checkpoint_every`` steps, at the end and on
SIGTERM/SIGINT, the main process writes an atomic training checkpoint (``training.state``) and
keeps the last N plus ``best``. A resumed run continues bit for bit (see ``training.state``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from DiffuX2CTLib.errors import InputError

from .cache import CacheManifest
from .config import BEST_METRICS, TrainConfig
from .distributed import (DistInfo, any_rank, barrier, gather_strings, init_distributed, mean_over_ranks,
                          parameter_fingerprint, shutdown)
from .ema import EMA
from .lr import warmup_cosine
from .objective import Objective, predict_volumes
from .render import RadiographRenderer
from .xray_augment import RadiographAugmenter
from .run_log import RunLogger
from .sampler import StreamSampler
from .state import (TrainingState, latest_checkpoint, mark_best, prune_checkpoints, read_training_checkpoint,
                    restore_training_state, save_training_checkpoint)


@dataclass
class TrainResult:
    """How a call to :func:`train` ended.

    Attributes:
        run_dir: the run folder.
        step: optimiser steps done in total.
        finished: True when ``max_steps`` was reached; False when stopped by a signal.
        last_checkpoint: the newest training checkpoint folder.
        best: the ``best`` checkpoint folder, if validation ran.
        seconds: wall time of this call.
        final_loss: mean training loss over the last log window.
    """

    run_dir: Path
    step: int
    finished: bool
    last_checkpoint: Path | None
    best: Path | None
    seconds: float
    final_loss: float | None


class StopRequest:
    """Set by SIGTERM or SIGINT; the loop stops after the current step and saves a checkpoint."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def is_set(self) -> bool:
        return self.event.is_set()


class TrainingStep(nn.Module):
    """The whole loss as one module, so that DDP sees a single forward per step.

    ``forward(x0, xrays, seeds) -> (3,)`` tensor ``[total, simple, proj]``.
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x0: torch.Tensor, xrays: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        terms = self.objective(self.model, x0, xrays, [int(s) for s in seeds.tolist()])
        return torch.stack([terms.total, terms.simple.detach(), terms.proj.detach()])


def _ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which saves and then ends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def resolve_train_device(name: str, dist_info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(None, "config key 'train.device': CUDA is not available in this torch build")
        if device.index is None:
            device = torch.device("cuda", dist_info.local_rank)
    return device


def _validate(ema_model: nn.Module, volumes: torch.Tensor, renderer: RadiographRenderer, config: TrainConfig,
              device: torch.device) -> dict[str, float]:
    """Mean PSNR, SSIM, MAE and RMSE of the EMA network on the fixed validation subset."""
    from DiffuX2CTLib.metrics import volume_metrics

    intensity = config.build_intensity()
    started = time.perf_counter()
    results = []
    with torch.no_grad():
        for start in range(0, volumes.shape[0], config.data.batch_size):
            hu = volumes[start:start + config.data.batch_size].to(device)
            xrays = renderer.radiograph(hu)
            pred = predict_volumes(ema_model, xrays, config.objective, config.build_diffusion_config(),
                                   sampler=config.train.val_sampler, steps=config.train.val_steps, seed=config.train.seed)
            pred_hu = intensity.denormalize(pred[:, 0]).cpu().numpy()
            for p, t in zip(pred_hu, hu[:, 0].cpu().numpy()):
                results.append(volume_metrics(p, t, intensity))
    keys = ("psnr_db", "ssim", "mae_hu", "rmse_hu")
    mean = {k: sum(r[k] for r in results) / len(results) for k in keys}
    return {"psnr_db": mean["psnr_db"], "ssim3d": mean["ssim"], "mae_hu": mean["mae_hu"], "rmse_hu": mean["rmse_hu"],
            "seconds": time.perf_counter() - started}


def _is_better(score: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return score > best if BEST_METRICS[metric] else score < best


def train(config: TrainConfig, *, resume: bool = True, progress: bool = True) -> TrainResult:
    """Run (or resume) a training run as described by ``config``; see the module docstring."""
    started = time.perf_counter()
    device_name = config.train.device
    dist_info = init_distributed("cuda" if device_name.startswith("cuda") or
                                 (device_name == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        with StopRequest() as stop:
            return _train(config, dist_info, stop, resume, progress, started)
    finally:
        shutdown(dist_info)


def _initialise_from(model: nn.Module, ema: EMA, path: str, network_config, geometry) -> None:
    """Start from an inference checkpoint's weights (digest-checked; same network and geometry)."""
    from DiffuX2CTLib.checkpoint import load_checkpoint

    loaded = load_checkpoint(path)
    if loaded.info.network.replace(use_checkpointing=False) != network_config.replace(use_checkpointing=False):
        raise InputError(Path(path), "config key 'train.init_from': its network differs from the config's")
    if loaded.info.geometry.hash != geometry.hash:
        raise InputError(Path(path), f"config key 'train.init_from': its geometry {loaded.info.geometry.name!r} "
                                     f"({loaded.info.geometry.hash}) differs from the config's ({geometry.hash})")
    for target in (model, ema.shadow):
        target.load_state_dict(loaded.model.state_dict(), strict=True)


def _train(config: TrainConfig, dist_info: DistInfo, stop: StopRequest, resume: bool, progress: bool,
           started: float) -> TrainResult:
    from DiffuX2CTLib.diffusion import NoiseSchedule
    from DiffuX2CTLib.drr import DRRProjector
    from DiffuX2CTLib.network import DiffuX2CTNet

    from .dataset import TrainingVolumes, load_volumes

    run = config.train
    device = resolve_train_device(run.device, dist_info)
    if run.threads:
        torch.set_num_threads(run.threads)
    run_dir = Path(config.run_dir)
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    # --- data -----------------------------------------------------------------------------
    geometry = config.build_geometry()
    manifest = CacheManifest.load(config.data.cache)
    if manifest.geometry.hash != geometry.hash:
        raise InputError(Path(config.data.cache), f"cache geometry {manifest.geometry.name!r} ({manifest.geometry.hash}) "
                                                  f"differs from the config's {geometry.name!r} ({geometry.hash})")
    if manifest.xray_supersample != config.data.xray_supersample:
        raise InputError(Path(config.data.cache), f"cache DRRs were rendered with supersampling {manifest.xray_supersample}, "
                                                  f"the config says data.xray_supersample {config.data.xray_supersample}: "
                                                  "use the same value (prepare_data --xray-supersample)")
    train_records = manifest.cases_in(config.data.train_split)
    if not train_records:
        raise InputError(Path(config.data.cache), f"split {config.data.train_split!r} has no cases")
    val_records = manifest.cases_in(config.data.val_split)[: config.data.val_cases] if run.val_every else []
    if config.data.batch_size % dist_info.world_size:
        raise InputError(None, f"config key 'data.batch_size': {config.data.batch_size} is not divisible by "
                               f"{dist_info.world_size} processes")

    # --- model, EMA, optimiser ------------------------------------------------------------
    torch.manual_seed(run.seed)  # identical initial weights on every rank
    network_config = config.build_network_config(geometry)
    model = DiffuX2CTNet(network_config, geometry).to(device)
    ema = EMA(model, config.ema.decay, config.ema.start_step)
    o = config.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    state = TrainingState(step=0, model=model, ema=ema, optimizer=optimizer)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        loaded = read_training_checkpoint(checkpoint)
        saved_batch = loaded.meta["config"]["data"]["batch_size"]
        if saved_batch != config.data.batch_size:
            raise InputError(checkpoint, f"was trained with data.batch_size {saved_batch}; resume with the same "
                                         f"global batch (now {config.data.batch_size})")
        restore_training_state(loaded, state)
        model.to(device)
        ema.shadow.to(device)
    elif run.init_from:
        _initialise_from(model, ema, run.init_from, network_config, geometry)
    start_step = state.step

    intensity = config.build_intensity()
    schedule = NoiseSchedule(config.build_diffusion_config())
    renderer = RadiographRenderer(geometry, config.data.xray_supersample, manifest.mu_water_per_mm)
    film_augmenter = RadiographAugmenter(config.augment, geometry, config.data.xray_supersample, renderer.normalization,
                                         manifest.mu_water_per_mm)
    projector = DRRProjector(geometry, mu_water_per_mm=manifest.mu_water_per_mm)
    objective = Objective(config.objective, schedule, intensity, projector)
    step_module: nn.Module = TrainingStep(model, objective)
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        step_module = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None,
                                              broadcast_buffers=False)
    if run.compile:
        step_module = torch.compile(step_module)

    dataset = TrainingVolumes(config.data.cache, train_records, geometry.volume_spacing_mm, config.augment,
                              run.seed, config.data.cache_rate)
    sampler = StreamSampler(len(dataset), config.data.batch_size, run.seed, dist_info.rank, dist_info.world_size,
                            start_step=start_step)
    loader = torch.utils.data.DataLoader(dataset, batch_size=sampler.local, sampler=sampler,
                                         num_workers=config.data.num_workers, pin_memory=device.type == "cuda",
                                         persistent_workers=config.data.num_workers > 0,
                                         worker_init_fn=_ignore_stop_signals)
    val_volumes = load_volumes(config.data.cache, val_records) if (val_records and dist_info.is_main) else None

    logger = RunLogger(run_dir) if dist_info.is_main else None
    if logger is not None:
        logger.resume_at(start_step)
        (run_dir / "config.yaml").write_text(_yaml(config.to_dict()))
    extra = {"mu_water_per_mm": manifest.mu_water_per_mm,
             "data": {"cache": str(config.data.cache), "geometry_hash": geometry.hash,
                      "train_cases": len(train_records), "train_groups": sorted({r.group for r in train_records}),
                      "split_method": manifest.split_method}}

    bar = None
    if progress and dist_info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=run.max_steps, initial=start_step, desc=config.name, unit="step", file=sys.stderr,
                   dynamic_ncols=True)
    if dist_info.is_main:
        print(f"[train] {config.name}: {model.num_parameters():,} parameters, objective {config.objective}, "
              f"{len(train_records)} training volumes, {len(val_records)} validation, device {device}, "
              f"{dist_info.world_size} process(es), global batch {config.data.batch_size}"
              + (f", resumed at step {start_step} from {checkpoint}" if checkpoint else ""), file=sys.stderr)

    def save(step: int) -> Path | None:
        # every rank's weight fingerprint goes into the checkpoint: DDP must keep them identical
        fingerprints = gather_strings(parameter_fingerprint(model), dist_info)
        if len(set(fingerprints)) > 1 and dist_info.is_main:
            print(f"[train] WARNING: the processes' weights differ at step {step} (DDP out of sync)", file=sys.stderr)
        path = None
        if dist_info.is_main:
            state.step = step
            path = save_training_checkpoint(run_dir, state, config.to_dict(), dist_info.world_size,
                                            dict(extra, rank_fingerprints=fingerprints))
            prune_checkpoints(run_dir, run.keep_last)
        barrier(dist_info)
        return path

    step = start_step
    last_saved: Path | None = checkpoint
    window = torch.zeros(3, device=device)
    window_n, window_t, window_grad = 0, time.perf_counter(), 0.0
    final_loss = None
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=run.bf16)
    model.train()
    data_iter = iter(loader)
    try:
        while step < run.max_steps:
            batch = next(data_iter)
            volume_hu = batch["volume"].to(device, non_blocking=True)
            with torch.no_grad():
                fine = renderer.fine(volume_hu)
                xrays = renderer.normalization(renderer.pool(fine))
                xrays = film_augmenter(fine, xrays, batch["seed"].tolist() if torch.is_tensor(batch["seed"]) else batch["seed"])
                x0 = intensity.normalize(volume_hu)
            lr = warmup_cosine(step, base_lr=o.lr, warmup_steps=o.warmup_steps, max_steps=run.max_steps,
                               min_lr_ratio=o.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                terms = step_module(x0, xrays, batch["seed"])
            optimizer.zero_grad(set_to_none=True)
            terms[0].backward()
            if o.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            else:
                grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
            optimizer.step()
            step += 1
            ema.update(model, step)
            window += terms.detach().float()
            window_grad += float(grad_norm)
            window_n += 1

            if run.log_every and (step % run.log_every == 0 or step == run.max_steps):
                mean = mean_over_ranks(window / window_n, dist_info)
                elapsed = time.perf_counter() - window_t
                final_loss = float(mean[0])
                if logger is not None:
                    logger.log_train({"step": step, "epoch": sampler.epoch_at(step), "loss": float(mean[0]),
                                      "simple": float(mean[1]), "proj": float(mean[2]), "lr": lr,
                                      "grad_norm": window_grad / window_n,
                                      "samples_per_s": window_n * config.data.batch_size / max(elapsed, 1e-9),
                                      "seconds": time.perf_counter() - started})
                if bar is not None:
                    bar.set_postfix(loss=f"{float(mean[0]):.4f}", lr=f"{lr:.2e}")
                window.zero_()
                window_n, window_t, window_grad = 0, time.perf_counter(), 0.0
            if bar is not None:
                bar.update(1)

            validate_now = val_volumes is not None and run.val_every and (step % run.val_every == 0 or step == run.max_steps)
            save_now = (run.checkpoint_every and step % run.checkpoint_every == 0) or step == run.max_steps
            stopping = any_rank(stop.is_set(), dist_info, device)
            if validate_now:
                scores = _validate(ema.shadow, val_volumes, renderer, config, device)
                if logger is not None:
                    logger.log_val({"step": step, **scores})
                model.train()
                metric = scores[run.best_metric]
                if _is_better(metric, state.best_score, run.best_metric):
                    state.best_score, state.best_step = metric, step
                    last_saved = save(step)
                    if last_saved is not None:
                        mark_best(run_dir, last_saved)
                    save_now = False
            if save_now or stopping:
                last_saved = save(step)
            if stopping:
                break
    finally:
        if bar is not None:
            bar.close()
        if logger is not None:
            logger.close()
    finished = step >= run.max_steps
    if dist_info.is_main and not finished:
        print(f"[train] stopped by {stop.signal_name or 'request'} after step {step}; checkpoint {last_saved}. "
              "Run the same command again to resume.", file=sys.stderr)
    best = run_dir / "checkpoints" / "best"
    return TrainResult(run_dir, step, finished, last_saved, best if best.is_dir() else None,
                       time.perf_counter() - started, final_loss)


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


__all__ = ["StopRequest", "TrainResult", "TrainingStep", "train"]
