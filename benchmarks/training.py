"""Benchmark: training throughput of DiffuX2CT against MONAI's DiffusionModelUNet.

One training step = forward + backward + AdamW step, at the same volume size and batch, on the
same machine, for two networks of about the same parameter count:

* **ours**: ``DiffuX2CTNet(config, geometry)`` trained exactly as ``training/`` does:
  ``Objective(kind="diffusion", schedule=NoiseSchedule(DiffusionConfig()), intensity=CTIntensity(),
  projector=DRRProjector(geometry))(model, x0, xrays, seeds).total.backward()``. The step therefore
  includes the condition encoding (tri-plane generator + implicit decoder on the N^3 grid, from the
  two radiographs) and ``L_proj`` through the DRR projector.
* **MONAI**: ``monai.networks.nets.DiffusionModelUNet`` (3D) with the same levels, residual blocks
  and attention levels, conditioned by concatenating ``F`` condition channels to its input
  (``in_channels = 1 + F``), plain MSE epsilon loss. Its condition is a ready-made random tensor (it
  has no encoder), which favours MONAI. Its attention is global self-attention (SDPA) at the
  attention levels, ours is 4^3 shifted-window attention. Its channel width is searched so that its
  parameter count is the closest to ours (within ~15%; both counts are printed).

Each case (network x size x variant) runs in a fresh subprocess: ``warmup`` untimed steps, then
``steps`` timed steps; the figure is the median. Peak memory: CPU ``ru_maxrss`` above its value
after the imports (weights, gradients, AdamW state, activations, allocator caching); CUDA
``torch.cuda.max_memory_allocated``. Inputs are random (content does not change the compute).

Run:  .venv/bin/python benchmarks/training.py               (CPU: 32^3 and 64^3, small network, ~5 min on 2 cores)
      .venv/bin/python benchmarks/training.py --quick       (tiny networks at 16^3, smoke run, < 1 min)
      bash benchmarks/gpu_train.sh                          (one GPU: 128^3 paper network, fp32/bf16/ckpt/compile)
Options: --size 32 64, --batch B, --device cpu|cuda, --network small|paper,
--variants fp32,bf16,bf16+ckpt,bf16+compile (bf16 = autocast; ckpt = activation checkpointing, ours
only (MONAI's U-Net has none: its bf16 row is the reference); compile = torch.compile(model)),
--steps, --warmup, --case-timeout, --compile-timeout, --budget (total seconds). The first
compiled step includes compilation (it took 140 s for the tiny network on 2 CPU cores). Prints a table and ends with one JSON line
``{"training_throughput": {...}}`` (the largest size and first variant; every case under "runs").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from _common import REPO_ROOT, Stopwatch, device_name, fmt_seconds, load_average, max_rss_mib  # noqa: E402

# This file is named training.py: drop its folder from the path so that ``import training`` finds the
# repository's training package, and put the repository first.
sys.path[:] = [str(REPO_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (_HERE, REPO_ROOT)]

VARIANTS = ("fp32", "bf16", "bf16+ckpt", "bf16+compile")
CHILD_TAG = "CHILD_RESULT "
SMALL_DESCRIPTION = ("NetworkConfig.small().replace(volume_size=N, xray_size=N, base_channels=16, norm_num_groups=8, "
                     "xray_encoder_channels=(16, 32, 64), triplane_channels=16, decoder_width=32)")


# --- networks ----------------------------------------------------------------------------------------
def network_config(kind: str, size: int, quick: bool = False):
    """Our network at ``size``^3 / ``size``^2: ``paper``, the CPU-sized ``small`` or (``quick``) the tiny test one."""
    from DiffuX2CTLib.network import NetworkConfig

    if quick:
        return NetworkConfig.tiny().replace(volume_size=size, xray_size=size)
    if kind == "paper":
        return NetworkConfig.paper().replace(volume_size=size, xray_size=size)
    return NetworkConfig.small().replace(volume_size=size, xray_size=size, base_channels=16, norm_num_groups=8,
                                         xray_encoder_channels=(16, 32, 64), triplane_channels=16, decoder_width=32)


def monai_kwargs(cfg, base: int) -> dict:
    """DiffusionModelUNet arguments mirroring ``cfg``'s U-Net layout with ``base`` channels at full resolution."""
    channels = [base * m for m in cfg.channel_mult]
    groups = math.gcd(cfg.norm_num_groups, *channels)
    return dict(spatial_dims=3, in_channels=cfg.in_channels + cfg.condition_channels, out_channels=cfg.out_channels,
                num_res_blocks=cfg.num_res_blocks, channels=channels, attention_levels=list(cfg.attention_levels),
                norm_num_groups=groups,
                num_head_channels=[head_channels(c, cfg.num_heads) if a else c for c, a in zip(channels, cfg.attention_levels)],
                use_flash_attention=True)


def head_channels(channels: int, heads: int) -> int:
    """A multiple of 8 dividing ``channels`` (fused SDPA kernels need it) giving about ``heads`` heads."""
    options = [d for d in range(8, channels + 1, 8) if channels % d == 0] or [channels]
    return min(options, key=lambda d: (abs(channels // d - heads), d))


def count_params(module_factory) -> int:
    import torch

    with torch.device("meta"):
        module = module_factory()
    return sum(p.numel() for p in module.parameters())


def matched_monai_kwargs(cfg, target_params: int) -> dict:
    """The MONAI layout whose parameter count is closest to ``target_params`` (even base width; the
    attention levels' channels multiples of 8)."""
    from monai.networks.nets import DiffusionModelUNet

    best = None
    for base in range(4, 8 * cfg.base_channels + 2, 2):
        if any(a and (base * m) % 8 for m, a in zip(cfg.channel_mult, cfg.attention_levels)):
            continue
        kwargs = monai_kwargs(cfg, base)
        n = count_params(lambda: DiffusionModelUNet(**kwargs))
        if best is None or abs(n - target_params) < abs(best[0] - target_params):
            best = (n, kwargs)
        if n > 1.5 * target_params:
            break
    return best[1]


def ours_params(cfg) -> int:
    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.network import DiffuX2CTNet

    geometry = BiplanarGeometry.preset("x2ct", volume_size=cfg.volume_size, xray_size=cfg.xray_size)
    return count_params(lambda: DiffuX2CTNet(cfg, geometry))


def warm_system_matrix(cfg) -> None:
    """Build (or load) the DRR system matrix into the disk cache here, so that no case's timeout or
    memory baseline includes building it (the cases only load it)."""
    from DiffuX2CTLib.drr.projector import load_system_matrix
    from DiffuX2CTLib.geometry import BiplanarGeometry

    with Stopwatch() as sw:
        load_system_matrix(BiplanarGeometry.preset("x2ct", volume_size=cfg.volume_size, xray_size=cfg.xray_size))
    print(f"  DRR system matrix ready in {fmt_seconds(sw.seconds)} (built or loaded from the cache; not timed)")


# --- one case, in a fresh process --------------------------------------------------------------------------
def child_main(spec: dict) -> dict:
    """Build one network, run ``warmup`` + ``steps`` training steps, report time and peak memory."""
    import torch
    import torch.nn.functional as F
    from monai.networks.nets import DiffusionModelUNet

    from DiffuX2CTLib.diffusion import DiffusionConfig, NoiseSchedule
    from DiffuX2CTLib.drr.projector import DRRProjector
    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.io.intensity import CTIntensity
    from DiffuX2CTLib.network import DiffuX2CTNet
    from training.objective import Objective, sample_seed

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    variant, which, b = spec["variant"], spec["model"], spec["batch"]
    cfg = network_config(spec["network"], spec["size"], spec["quick"])
    n = cfg.volume_size
    geometry = BiplanarGeometry.preset("x2ct", volume_size=n, xray_size=cfg.xray_size)
    schedule = NoiseSchedule(DiffusionConfig())
    projector = DRRProjector(geometry).to(device) if which == "ours" else None  # system matrix: built or cached, untimed
    if cuda:
        torch.cuda.init()
        torch.empty(1, device=device)
        torch.backends.cuda.matmul.allow_tf32 = False  # "fp32" means fp32
        torch.backends.cudnn.allow_tf32 = False
    rss0 = max_rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base_alloc = torch.cuda.memory_allocated(device)

    torch.manual_seed(0)
    if which == "ours":
        model = DiffuX2CTNet(cfg, geometry).to(device).train()
        if "ckpt" in variant:
            model.set_checkpointing(True)
    else:
        model = DiffusionModelUNet(**spec["monai_kwargs"]).to(device).train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    run_model = torch.compile(model) if "compile" in variant else model
    objective = Objective(kind="diffusion", schedule=schedule, intensity=CTIntensity(), projector=projector)

    gen = torch.Generator(device="cpu").manual_seed(1)
    x0 = (torch.rand(b, 1, n, n, n, generator=gen) * 2 - 1).to(device)
    xrays = (torch.rand(b, 2, cfg.xray_size, cfg.xray_size, generator=gen) * 2 - 1).to(device)
    condition = torch.randn(b, cfg.condition_channels, n, n, n, generator=gen).to(device)
    use_bf16 = variant.startswith("bf16")

    def step(i: int) -> float:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if which == "ours":
                loss = objective(run_model, x0, xrays, [sample_seed(0, i, k) for k in range(b)]).total
            else:
                t = torch.randint(0, schedule.num_timesteps, (b,), device=device)
                noise = torch.randn_like(x0)
                x_t = schedule.q_sample(x0, t, noise)
                prediction = run_model(torch.cat([x_t, condition], dim=1), t)
                loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    first = []
    for i in range(spec["warmup"]):
        with Stopwatch(cuda) as sw:
            step(i)
        first.append(sw.seconds)
    times, utils = [], []
    for i in range(spec["steps"]):
        with Stopwatch(cuda) as sw:
            loss = step(spec["warmup"] + i)
        times.append(sw.seconds)
        utils.append(sw.cpu_util)
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss}")
    step_s = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated(device) - base_alloc) / 2**20 if cuda else max_rss_mib() - rss0
    return {"model": which, "size": n, "variant": variant, "batch": b, "params": params, "step_s": step_s,
            "all_step_s": times, "warmup_s": first, "samples_per_s": b / step_s, "peak_mib": peak,
            "cpu_util": statistics.median(utils)}


def run_child(spec: dict, timeout: float | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(spec)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    head = {"model": spec["model"], "size": spec["size"], "variant": spec["variant"], "batch": spec["batch"]}
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**head, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG):])
    return {**head, "error": f"child exited with code {proc.returncode}"}


# --- driver --------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=None,
                        help="volume sizes N (radiographs N^2); default 32 64 (CPU), 128 (CUDA), 16 (--quick)")
    parser.add_argument("--batch", type=int, default=1, help="samples per step (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--network", default=None, choices=["small", "paper"],
                        help="our network: small (CPU-sized, default on the CPU) or paper (default on CUDA)")
    parser.add_argument("--variants", default="fp32", help=f"comma-separated among {','.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 3 CPU, 10 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 3 CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--case-timeout", type=float, default=None, help="seconds allowed per case (default 240 CPU, 150 CUDA)")
    parser.add_argument("--compile-timeout", type=float, default=None,
                        help="seconds allowed per bf16+compile case (compilation included; default 2 x --case-timeout)")
    parser.add_argument("--budget", type=float, default=None,
                        help="total seconds for all cases: a case gets at most what is left, later ones are skipped")
    parser.add_argument("--quick", action="store_true", help="tiny networks at 16^3, 1 warm-up + 2 timed steps (< 1 min)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad or not args.variants:
        parser.error(f"--variants: unknown {bad}; choose among {','.join(VARIANTS)}")
    if not cuda and any(v != "fp32" for v in args.variants) and not args.quick:
        print("note: bf16 variants on the CPU run, but mean little", file=sys.stderr)
    args.network = args.network or ("paper" if cuda else "small")
    args.size = args.size or ([16] if args.quick else [128] if cuda else [32, 64])
    args.steps = args.steps or (2 if args.quick else 10 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick or not cuda else 3)
    args.case_timeout = args.case_timeout or (150.0 if cuda else 240.0)
    args.compile_timeout = args.compile_timeout or 2 * args.case_timeout
    return args


def fmt_row(r: dict, monai: dict | None = None) -> str:
    """A table row; for ours, ``monai`` is the reference row and the ratio is printed."""
    name = f"{r['size']}^3 {r['variant']:<13s}{r['model']:<6s}"
    if "error" in r:
        return f"  {name} error: {r['error']}"
    ratio = ""
    if r["model"] == "ours" and monai is not None and "error" not in monai:
        ratio = f"{r['samples_per_s'] / monai['samples_per_s']:>8.2f}x"
    return (f"  {name}{r['params']:>13,d}{fmt_seconds(r['step_s']):>11s}{r['samples_per_s']:>11.3f}"
            f"{r['peak_mib']:>11.0f}{r['cpu_util']:>7.2f}{ratio}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._child is not None:
        spec = json.loads(args._child)
        try:
            result = child_main(spec)
        except Exception as exc:  # noqa: BLE001 - the parent reports it in the table
            result = {"model": spec["model"], "size": spec["size"], "variant": spec["variant"], "batch": spec["batch"],
                      "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
        print(CHILD_TAG + json.dumps(result), flush=True)
        return

    import torch

    device = torch.device(args.device)
    print("DiffuX2CT training throughput against MONAI DiffusionModelUNet")
    print(f"  command: {shlex.join(['.venv/bin/python', 'benchmarks/training.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"  device: {device_name(device)} ({device.type}); torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"python {platform.python_version()}; load average {load_average()}")
    network = "tiny (--quick)" if args.quick else (SMALL_DESCRIPTION if args.network == "small" else "NetworkConfig.paper()")
    print(f"  ours: {network}; batch {args.batch}; {args.warmup} warm-up + {args.steps} timed steps per case (median)")

    started = time.perf_counter()
    runs: list[dict] = []
    matched: dict[int, dict] = {}
    for size in args.size:
        cfg = network_config(args.network, size, args.quick)
        ours_n = ours_params(cfg)
        kwargs = matched_monai_kwargs(cfg, ours_n)
        from monai.networks.nets import DiffusionModelUNet

        monai_n = count_params(lambda: DiffusionModelUNet(**kwargs))
        matched[size] = {"ours_params": ours_n, "monai_params": monai_n, "monai_channels": kwargs["channels"]}
        print(f"\n{size}^3: ours {ours_n:,d} parameters (U-Net levels {list(cfg.level_channels)}, F={cfg.condition_channels}); "
              f"MONAI {monai_n:,d} parameters (channels {kwargs['channels']}, in_channels {kwargs['in_channels']}; "
              f"{100 * (monai_n / ours_n - 1):+.1f}%)")
        warm_system_matrix(cfg)
        print(f"  {'case':<24s}{'params':>13s}{'s/step':>11s}{'samples/s':>11s}{'peak MiB':>11s}{'util':>7s}{' ours/MONAI':>9s}")
        for variant in args.variants:
            by_model = {}
            for which in ("monai", "ours"):
                if which == "monai" and "ckpt" in variant:
                    by_model["monai"] = next((r for r in runs if r["size"] == size and r["model"] == "monai"
                                              and r["variant"] == variant.replace("+ckpt", "")), None)
                    print(f"  {size}^3 {variant:<13s}monai  (no activation checkpointing in MONAI; ratio against its "
                          f"{variant.replace('+ckpt', '')} row)")
                    continue
                spec = {"model": which, "size": size, "variant": variant, "batch": args.batch, "device": str(device),
                        "network": args.network, "quick": args.quick, "steps": args.steps, "warmup": args.warmup,
                        "threads": args.threads, "monai_kwargs": kwargs}
                left = None if args.budget is None else args.budget - (time.perf_counter() - started)
                if left is not None and left < 20:
                    r = {"model": which, "size": size, "variant": variant, "batch": args.batch,
                         "error": f"skipped: --budget {args.budget:.0f} s spent"}
                else:
                    limit = args.compile_timeout if "compile" in variant else args.case_timeout
                    r = run_child(spec, limit if left is None else min(limit, left))
                by_model[which] = r
                runs.append(r)
                print(fmt_row(r, by_model.get("monai") if which == "ours" else None), flush=True)

    def pair(size: int, variant: str) -> dict:
        ours = next((r for r in runs if r["model"] == "ours" and r["size"] == size and r["variant"] == variant), {})
        ref = variant.replace("+ckpt", "")
        monai = next((r for r in runs if r["model"] == "monai" and r["size"] == size and r["variant"] == ref), {})
        o, m = ours.get("samples_per_s"), monai.get("samples_per_s")
        return {"size": size, "variant": variant, "batch": args.batch, "monai_variant": ref,
                "ours_samples_per_s": o, "monai_samples_per_s": m, "ratio": o / m if o and m else None,
                "ours_peak_mib": ours.get("peak_mib"), "monai_peak_mib": monai.get("peak_mib"),
                "ours_params": matched[size]["ours_params"], "monai_params": matched[size]["monai_params"],
                "errors": [r["error"] for r in (ours, monai) if "error" in r] or None}

    pairs = [pair(s, v) for s in args.size for v in args.variants]
    print("\nratio = ours samples/s / MONAI samples/s (> 1: ours trains faster). Ours includes the condition "
          "encoder and L_proj; MONAI gets its condition for free.")
    summary = {**pair(max(args.size), args.variants[0]), "device": device_name(device),
               "load_average_end": load_average(), "network": args.network if not args.quick else "tiny",
               "runs": runs, "pairs": pairs}
    print(json.dumps({"training_throughput": summary}))


if __name__ == "__main__":
    main()
