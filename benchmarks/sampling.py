"""Benchmark: cost of sampling a CT with DiffuX2CT (network evaluation and full reconstruction).

Three parts, all at batch 1 under ``torch.inference_mode``:

1. Per network evaluation, paper-scale network (``NetworkConfig.paper()``; 128^3 CT from 128^2
   radiographs, or ``.replace(volume_size=64, xray_size=64)`` on the matching ``x2ct`` geometry):
   parameters, denoiser GFLOP (counted on the meta device), the condition encoding time (tri-plane
   generator + implicit decoder, once per reconstruction), the denoiser forward time (once per
   sampler step) and the peak memory. Each case runs in a fresh subprocess: on the CPU the peak
   is ``ru_maxrss`` minus its value after the imports (weights, condition and activations; the
   process high-water mark, allocator caching included), on CUDA ``torch.cuda.max_memory_allocated``.
   One warm-up forward precedes the timed ones, except on the CPU at 128^3 and above where it is
   skipped (it would double a minutes-long measurement; the table says so).
2. MEASURED reconstruction times of a small network at 64^3 (``SMALL`` below; untrained random
   weights saved with ``save_checkpoint`` and run through ``DiffuX2CTLib.inference.reconstruct``,
   the path the CLI, worker and Slicer module use; weights do not change the compute) with
   DDPM-1000 and with DDIM and DPM-Solver++ at 10, 25 and 50 steps. ``--recon-config paper``
   measures the paper network instead (sensible on a GPU).
3. DERIVED paper-scale reconstruction times: ``encode + evaluations x forward`` from part 1 (the
   sampler's own arithmetic is negligible; part 2's "overhead" column shows how much it is).

Run:  .venv/bin/python benchmarks/sampling.py                 (CPU or GPU, about 20 min on 2 CPU cores)
      .venv/bin/python benchmarks/sampling.py --quick         (tiny networks, smoke run, < 1 min)
      bash benchmarks/gpu.sh                                  (one H100: bf16, with and without torch.compile)
Options: --device auto|cpu|cuda, --dtype float32|bfloat16 (autocast, parts 1 and 3; reconstruct
itself uses bf16 autocast on CUDA and float32 on the CPU), --compile (torch.compile the denoiser),
--sizes 64,128, --skip-ddpm, --ddpm-budget SECONDS (stop DDPM-1000 early and extrapolate).
Prints a table and a final JSON line ``{"device", "per_eval", "measured_reconstruction",
"derived_reconstruction", ...}`` (seconds and MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO_ROOT, Stopwatch, device_name, ensure_repo_on_path, fmt_seconds, load_average, max_rss_mib,
)

ensure_repo_on_path()

FAST_SAMPLERS = ("ddim", "dpmsolver++")
CHILD_TAG = "CHILD_RESULT "


# --- network configurations ---------------------------------------------------------------------
def paper_config(size: int, quick: bool = False):
    """The paper network at ``size``^3 / ``size``^2 (the tiny test network in --quick runs)."""
    from DiffuX2CTLib.network import NetworkConfig

    base = NetworkConfig.tiny() if quick else NetworkConfig.paper()
    return base.replace(volume_size=size, xray_size=size)


SMALL_DESCRIPTION = (
    "NetworkConfig.tiny().replace(volume_size=64, xray_size=64, channel_mult=(1, 1, 2, 2), "
    "attention_levels=(False, False, True, True), num_heads=2, condition_channels=8, "
    "decoder_chunk_size=65536)"
)


def small_config(size: int = 64, quick: bool = False):
    """The small network of part 2: U-Net levels 64/32/16/8 with 8/8/16/16 channels, one residual
    block per level, window attention at 16^3 and 8^3, F = 8 condition channels (as the paper),
    ~0.26 M parameters. About 0.5 s per evaluation on 2 idle CPU cores, so DDPM-1000 takes minutes.
    (Fewer than 8 channels at 64^3 is not cheaper on the CPU: PyTorch then skips oneDNN for the
    3D convolutions and uses its slow reference kernel.)"""
    from DiffuX2CTLib.network import NetworkConfig

    if quick:
        return NetworkConfig.tiny().replace(volume_size=size, xray_size=size)
    return NetworkConfig.tiny().replace(
        volume_size=size, xray_size=size, channel_mult=(1, 1, 2, 2), attention_levels=(False, False, True, True),
        num_heads=2, condition_channels=8, decoder_chunk_size=65536,
    )


def config_summary(cfg) -> str:
    attn = [f"{-(-cfg.volume_size // 2 ** i)}^3" for i, a in enumerate(cfg.attention_levels) if a]
    return (f"{cfg.volume_size}^3 CT / {cfg.xray_size}^2 X-rays, U-Net channels {list(cfg.level_channels)}, "
            f"{cfg.num_res_blocks} res block(s)/level, window attention at {', '.join(attn) or 'none'} "
            f"(window {cfg.window_size}, {cfg.num_heads} heads), F={cfg.condition_channels}, "
            f"tri-planes C={cfg.triplane_channels}")


def build_config(kind: str, size: int, quick: bool):
    return paper_config(size, quick) if kind == "paper" else small_config(size, quick)


# --- small helpers --------------------------------------------------------------------------------
def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def autocast(device, dtype_name: str):
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype_name == "bfloat16")


def random_xrays(geometry, seed: int = 0):
    """Two positive, non-constant detector images (line-integral-like); content does not affect timing."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows, cols = geometry.detector_shape
    return [rng.gamma(4.0, 1.0, size=(rows, cols)).astype(np.float32) for _ in range(2)]


def denoiser_gflop(cfg) -> float | None:
    """FLOPs of one denoiser (U-Net) forward, counted on the meta device (no compute), in GFLOP."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from DiffuX2CTLib.network.unet3d import UNet3D

        n = cfg.volume_size
        with torch.device("meta"):
            unet = UNet3D(cfg).eval()
            x = torch.zeros(1, cfg.in_channels, n, n, n)
            c = torch.zeros(1, cfg.condition_channels, n, n, n)
            t = torch.tensor([500])
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            unet(x, t, c)
        return counter.get_total_flops() / 1e9
    except Exception:  # noqa: BLE001 - an extra figure, never worth failing the benchmark
        return None


def maybe_compile(model, enabled: bool, mode: str | None):
    """``torch.compile`` the denoiser (the U-Net) in place; the condition encoder runs once and stays eager."""
    if enabled:
        import torch

        model.unet = torch.compile(model.unet, mode=mode)
    return model


# --- part 1: one case in a fresh process -------------------------------------------------------------
def child_main(spec: dict) -> dict:
    """Measure one configuration; runs in its own process so that ru_maxrss is this case's alone."""
    import torch

    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.network import DiffuX2CTNet
    from DiffuX2CTLib.network import unet3d as _unet3d  # noqa: F401 - import cost before the baseline
    from DiffuX2CTLib.network import triplane as _triplane  # noqa: F401

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    cfg = build_config(spec["kind"], spec["size"], spec["quick"])
    geometry = BiplanarGeometry.preset("x2ct", volume_size=cfg.volume_size, xray_size=cfg.xray_size)
    n = cfg.volume_size
    if cuda:
        torch.cuda.init()
        torch.empty(1, device=device)  # create the context before the baseline
    rss0 = max_rss_mib()

    torch.manual_seed(0)
    model = DiffuX2CTNet(cfg, geometry).eval().to(device)
    out: dict = {
        "kind": spec["kind"], "size": n, "params": model.num_parameters(),
        "weights_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        "denoiser_gflop": denoiser_gflop(cfg),
    }
    maybe_compile(model, spec["compile"], spec.get("compile_mode"))
    xrays = torch.randn(1, 2, cfg.xray_size, cfg.xray_size, device=device).clamp(-1, 1)
    x = torch.randn(1, cfg.in_channels, n, n, n, device=device)
    t = torch.tensor([500], device=device)
    warmup = spec["warmup"]

    def encode():
        with torch.inference_mode(), autocast(device, spec["dtype"]):
            return model.encode_condition(xrays)

    def denoise(condition):
        with torch.inference_mode(), autocast(device, spec["dtype"]):
            return model(x, t, condition)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    if warmup:
        encode()
    with Stopwatch(cuda) as sw:
        condition = encode()
    out["encode_s"] = sw.seconds
    if cuda:
        out["peak_encode_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    else:
        out["peak_encode_mib"] = max_rss_mib() - rss0

    out["warmup"] = bool(warmup)
    if warmup:
        with Stopwatch(cuda) as sw:
            denoise(condition)
        out["first_call_s"] = sw.seconds  # includes torch.compile's compilation when --compile
    times, utils = [], []
    while len(times) < spec["repeats"] and (not times or sum(times) < spec["min_time"] or len(times) < spec["min_repeats"]):
        with Stopwatch(cuda) as sw:
            denoise(condition)
        times.append(sw.seconds)
        utils.append(sw.cpu_util)
    out["eval_s"] = statistics.median(times)
    out["eval_all_s"] = times
    out["cpu_util"] = statistics.median(utils)
    if cuda:
        out["peak_denoise_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_mib"] = max(out["peak_encode_mib"], out["peak_denoise_mib"])
    else:
        out["peak_mib"] = max_rss_mib() - rss0
    return out


def run_child(spec: dict, timeout: float | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(spec)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"kind": spec["kind"], "size": spec["size"], "error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG):])
    return {"kind": spec["kind"], "size": spec["size"], "error": f"child exited with code {proc.returncode}"}


# --- part 2: measured reconstructions ------------------------------------------------------------------
def make_checkpoint(cfg, folder: Path, seed: int = 0) -> Path:
    """An untrained (randomly initialised) network for ``cfg`` saved as a real checkpoint."""
    import torch

    from DiffuX2CTLib.checkpoint import CheckpointInfo, save_checkpoint
    from DiffuX2CTLib.diffusion.config import DiffusionConfig
    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.network import DiffuX2CTNet

    geometry = BiplanarGeometry.preset("x2ct", volume_size=cfg.volume_size, xray_size=cfg.xray_size)
    torch.manual_seed(seed)
    model = DiffuX2CTNet(cfg, geometry)
    info = CheckpointInfo(network=cfg, diffusion=DiffusionConfig(), geometry=geometry, trained=False, weights="raw",
                          training={"note": "untrained: random initialisation for benchmarks/sampling.py"})
    weights, _ = save_checkpoint(folder / "bench-untrained.safetensors", model.state_dict(), info)
    return weights


class _Budget:
    """``cancel``/``progress`` callbacks for reconstruct: stops after ``seconds`` and logs progress."""

    def __init__(self, seconds: float | None, label: str) -> None:
        self.seconds, self.label = seconds, label
        self.start = time.perf_counter()
        self.done = 0
        self.hit = False

    def cancel(self) -> bool:
        if self.seconds and time.perf_counter() - self.start > self.seconds:
            self.hit = True
        return self.hit

    def progress(self, i: int, n: int) -> None:
        self.done = i
        if n >= 200 and (i % 100 == 0 or i == n):
            elapsed = time.perf_counter() - self.start
            print(f"  {self.label}: {i}/{n} steps, {elapsed:.0f} s", file=sys.stderr, flush=True)


def measure_reconstructions(args, device, cfg, plan: list[tuple[str, int]], ddpm_budget: float | None) -> dict:
    """Time ``reconstruct`` for each (sampler, steps) in ``plan`` on an untrained ``cfg`` network."""
    import torch

    from DiffuX2CTLib.checkpoint import load_checkpoint
    from DiffuX2CTLib.diffusion import count_model_evaluations
    from DiffuX2CTLib.errors import CancelledError
    from DiffuX2CTLib.inference import reconstruct

    cuda = device.type == "cuda"
    result: dict = {"config": config_summary(cfg), "rows": []}
    with tempfile.TemporaryDirectory(prefix="diffux2ct-bench-") as tmp:
        with Stopwatch() as sw:
            path = make_checkpoint(cfg, Path(tmp))
        result["checkpoint_save_s"] = sw.seconds
        with Stopwatch(cuda) as sw:
            loaded = load_checkpoint(path, device=str(device))
        result["checkpoint_load_s"] = sw.seconds
        result["params"] = loaded.model.num_parameters()
        maybe_compile(loaded.model, args.compile, args.compile_mode)
        ap, lateral = random_xrays(loaded.info.geometry)

        def run(sampler: str, steps: int, budget: _Budget | None = None):
            kwargs = {"cancel": budget.cancel, "progress": budget.progress} if budget else {}
            return reconstruct(ap, lateral, loaded, steps=steps, sampler=sampler, seed=0, device=str(device), **kwargs)

        try:
            with Stopwatch(cuda) as sw:
                details = run("dpmsolver++", 2).details  # warm-up (and compilation, with --compile)
        except Exception as exc:  # noqa: BLE001 - e.g. torch.compile failing: report, skip part 2
            result.update(error=f"warm-up failed: {type(exc).__name__}: {exc}", warmup_s=None, dtype=None)
            print(f"  {result['error']}", flush=True)
            return result
        result["warmup_s"] = sw.seconds
        result["dtype"] = details["dtype"]
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for sampler, steps in plan:
            evals = count_model_evaluations(sampler, steps, loaded.info.diffusion)
            budget = _Budget(ddpm_budget if sampler == "ddpm" else None, f"{sampler}-{steps}")
            row = {"sampler": sampler, "steps": steps, "evaluations": evals}
            try:
                with Stopwatch(cuda) as sw:
                    run(sampler, steps, budget)
                row.update(seconds=sw.seconds, complete=True)
            except CancelledError:
                sw.seconds = time.perf_counter() - budget.start
                done = max(budget.done, 1)
                row.update(seconds=sw.seconds * evals / done, complete=False, steps_done=budget.done,
                           partial_seconds=sw.seconds)
            except Exception as exc:  # noqa: BLE001 - report and carry on with the other samplers
                row.update(error=f"{type(exc).__name__}: {exc}")
                result["rows"].append(row)
                print_recon_row(row)
                continue
            row["cpu_util"] = sw.cpu_util
            row["s_per_eval"] = row["seconds"] / evals
            result["rows"].append(row)
            print_recon_row(row)
        if cuda:
            result["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def print_recon_row(row: dict) -> None:
    name = f"{row['sampler']}-{row['steps']}"
    if "error" in row:
        print(f"  {name:16s}{row['evaluations']:>7d}   error: {row['error']}", flush=True)
        return
    note = "" if row["complete"] else (f"  EXTRAPOLATED from {row['steps_done']}/{row['evaluations']} steps "
                                       f"({row['partial_seconds']:.0f} s, --ddpm-budget hit)")
    print(f"  {name:16s}{row['evaluations']:>7d}{fmt_seconds(row['seconds']):>12s}{fmt_seconds(row['s_per_eval']):>12s}"
          f"{row['cpu_util']:>10.2f}{note}", flush=True)


# --- driver ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16 = torch.autocast for the per-evaluation measurements")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser (U-Net)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--sizes", default=None, help="paper-scale volume sizes, comma-separated (default 64,128)")
    parser.add_argument("--steps", default="10,25,50", help="DDIM / DPM-Solver++ step counts")
    parser.add_argument("--skip-ddpm", action="store_true", help="do not measure DDPM-1000 (it is still derived)")
    parser.add_argument("--ddpm-budget", type=float, default=None,
                        help="stop the measured DDPM-1000 after this many seconds and extrapolate (labelled)")
    parser.add_argument("--recon-config", default="small", choices=["small", "paper"],
                        help="network of the measured reconstructions (default: the small 64^3 one)")
    parser.add_argument("--recon-size", type=int, default=None,
                        help="volume size of the measured reconstructions (default 64 small, largest --sizes paper)")
    parser.add_argument("--skip-recon", action="store_true", help="skip the measured reconstructions (part 2)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="at most this many timed forwards per case (fewer on the CPU, see --min-time)")
    parser.add_argument("--min-time", type=float, default=3.0,
                        help="on the CPU, stop timing a case once its timed forwards took this long (at least one)")
    parser.add_argument("--ddpm-steps", type=int, default=None,
                        help="steps of the measured DDPM run (default: all T = 1000 training steps; 20 with --quick)")
    parser.add_argument("--warmup", default="auto", choices=["auto", "0", "1"],
                        help="warm-up forward per case; auto: yes, except on the CPU at >= 128^3 (and always with --compile)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--child-timeout", type=float, default=None, help="seconds allowed per part-1 case")
    parser.add_argument("--quick", action="store_true",
                        help="tiny networks at 16^3, DDPM-20 instead of DDPM-1000: a smoke run of the script (< 1 min)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._child is not None:
        spec = json.loads(args._child)
        try:
            result = child_main(spec)
        except Exception as exc:  # noqa: BLE001 - the parent reports it in the table
            result = {"kind": spec["kind"], "size": spec["size"], "error": f"{type(exc).__name__}: {exc}"}
        print(CHILD_TAG + json.dumps(result), flush=True)
        return

    import torch

    from DiffuX2CTLib.diffusion import count_model_evaluations
    from DiffuX2CTLib.diffusion.config import DiffusionConfig
    from DiffuX2CTLib.inference import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    sizes = [int(s) for s in (args.sizes or ("16" if args.quick else "64,128")).split(",") if s.strip()]
    fast_steps = [int(s) for s in args.steps.split(",") if s.strip()]
    T = DiffusionConfig().num_train_timesteps
    repeats = max(1, args.repeats)
    ddpm_steps = args.ddpm_steps or (20 if args.quick else T)
    started = time.perf_counter()
    loads = {"start": load_average()}

    print(f"device: {device} ({device_name(device)}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"python {platform.python_version()}")
    print(f"dtype {args.dtype}{' (autocast)' if args.dtype == 'bfloat16' else ''}, torch.compile {'on' if args.compile else 'off'}"
          f"{' (' + args.compile_mode + ')' if args.compile_mode else ''}; load average at start {loads['start']}")
    if args.quick:
        print("QUICK smoke run: tiny networks, the figures say nothing about the real model")

    # part 1 -----------------------------------------------------------------------------------------
    cases = [("paper", s) for s in sizes]
    recon_kind = args.recon_config
    recon_size = args.recon_size or ((16 if args.quick else 64) if recon_kind == "small" else max(sizes))
    recon_case = f"{recon_kind}@{recon_size}"
    if not args.skip_recon:
        same = [k for k, s in cases if build_config(k, s, args.quick) == build_config(recon_kind, recon_size, args.quick)]
        if same:  # e.g. --recon-config paper, or --quick where both are the tiny network
            recon_case = f"{same[0]}@{recon_size}"
        else:
            cases.append((recon_kind, recon_size))
    print(f"\nPer network evaluation, batch 1, each case in a fresh process "
          f"({'max_memory_allocated' if cuda else 'ru_maxrss above the post-import baseline'}):")
    header = (f"  {'case':12s}{'params':>12s}{'GFLOP':>9s}{'encode':>11s}{'1st call':>11s}{'forward':>11s}{'n':>3s}"
              f"{'cpu util':>10s}{'peak MiB':>10s}{'peak enc':>10s}")
    print(header)
    per_eval: dict[str, dict] = {}
    for kind, size in cases:
        if args.warmup == "auto":
            warmup = args.compile or cuda or size < 128
        else:
            warmup = args.warmup == "1" or args.compile
        spec = {"kind": kind, "size": size, "device": str(device), "dtype": args.dtype, "compile": args.compile,
                "compile_mode": args.compile_mode, "repeats": repeats, "warmup": warmup, "threads": args.threads,
                "quick": args.quick, "min_time": 0.0 if cuda else args.min_time, "min_repeats": repeats if cuda else 1}
        res = run_child(spec, args.child_timeout)
        name = f"{kind}@{size}"
        per_eval[name] = res
        if "error" in res:
            print(f"  {name:12s} error: {res['error']}", flush=True)
            continue
        gflop = f"{res['denoiser_gflop']:.0f}" if res.get("denoiser_gflop") else "-"
        first = fmt_seconds(res["first_call_s"]) if res["warmup"] else "skipped"
        print(f"  {name:12s}{res['params']:>12,d}{gflop:>9s}{fmt_seconds(res['encode_s']):>11s}{first:>11s}"
              f"{fmt_seconds(res['eval_s']):>11s}{len(res['eval_all_s']):>3d}{res['cpu_util']:>10.2f}{res['peak_mib']:>10.0f}"
              f"{res['peak_encode_mib']:>10.0f}", flush=True)
    loads["after_per_eval"] = load_average()
    print("  forward = median of the timed denoiser calls (%s); encode = condition encoding, once per reconstruction;"
          % (f"{repeats}" if cuda else f"until {args.min_time:g} s or {repeats} calls"))
    print("  1st call = the warm-up forward (includes compilation with --compile); 'skipped' = no warm-up, the")
    print("  timed call is the first one. cpu util = CPU seconds / wall seconds of the timed forward "
          "(~threads when the cores were free).")

    # part 2 -----------------------------------------------------------------------------------------
    plan = [(s, n) for s in FAST_SAMPLERS for n in fast_steps]
    if not args.skip_ddpm:
        plan.append(("ddpm", ddpm_steps))
    measured = None
    if not args.skip_recon:
        cfg = build_config(recon_kind, recon_size, args.quick)
        print(f"\nReconstruction, MEASURED through DiffuX2CTLib.inference.reconstruct, UNTRAINED weights "
              f"({recon_kind} network: {config_summary(cfg)}):")
        if recon_kind == "small" and not args.quick:
            print(f"  config: {SMALL_DESCRIPTION}")
        print(f"  {'sampler':16s}{'evals':>7s}{'seconds':>12s}{'per eval':>12s}{'cpu util':>10s}")
        measured = measure_reconstructions(args, device, cfg, plan, args.ddpm_budget)
        measured["kind"], measured["size"] = recon_kind, recon_size
        ref = per_eval.get(recon_case, {})
        print(f"  {measured['params']:,} parameters; reconstruct dtype {measured['dtype']}; checkpoint load "
              f"{fmt_seconds(measured['checkpoint_load_s'])} (done once, not in the times); warm-up "
              f"{fmt_seconds(measured['warmup_s'])} (a 2-step DPM-Solver++ run{', compiles' if args.compile else ''})")
        if "eval_s" in ref:
            for row in measured["rows"]:
                if "seconds" in row:
                    derived = ref["encode_s"] + row["evaluations"] * ref["eval_s"]
                    row["derived_seconds"] = derived
                    row["overhead"] = row["seconds"] / derived - 1.0
            pretty = ", ".join(f"{r['sampler']}-{r['steps']} {100 * r['overhead']:+.0f}%"
                               for r in measured["rows"] if "overhead" in r)
            print(f"  measured vs derived from part 1 (encode + evals x forward): {pretty}")
    loads["after_recon"] = load_average()

    # part 3 -----------------------------------------------------------------------------------------
    derived: dict[str, dict] = {}
    full_plan = [(s, n) for s in FAST_SAMPLERS for n in fast_steps] + [("ddpm", T)]
    paper_cases = [f"paper@{s}" for s in sizes if "eval_s" in per_eval.get(f"paper@{s}", {})]
    if paper_cases:
        print("\nReconstruction, DERIVED (not measured) = encode + evaluations x forward, paper network, "
              f"{args.dtype}{', compiled' if args.compile else ''}:")
        print(f"  {'sampler':16s}{'evals':>7s}" + "".join(f"{c:>14s}" for c in paper_cases))
        for sampler, steps in full_plan:
            evals = count_model_evaluations(sampler, steps)
            key = f"{sampler}-{steps}"
            cells = []
            for c in paper_cases:
                r = per_eval[c]
                secs = r["encode_s"] + evals * r["eval_s"]
                derived.setdefault(c, {})[key] = round(secs, 3)
                cells.append(f"{fmt_seconds(secs):>14s}")
            print(f"  {key:16s}{evals:>7d}" + "".join(cells))

    loads["end"] = load_average()
    total = time.perf_counter() - started
    print(f"\nload average: {loads}; total {fmt_seconds(total)}")

    def clean(d: dict) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v] if isinstance(v, list) and v
                    and isinstance(v[0], float) else v) for k, v in d.items()}

    summary = {
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "dtype": args.dtype, "compile": args.compile,
        "compile_mode": args.compile_mode, "quick": args.quick,
        "per_eval": {k: clean(v) for k, v in per_eval.items()},
        "measured_reconstruction": None if measured is None else {
            "network": f"{measured['kind']}@{measured['size']}", "config": measured["config"],
            "params": measured["params"], "untrained": True, "dtype": measured["dtype"],
            "warmup_s": None if measured["warmup_s"] is None else round(measured["warmup_s"], 3),
            "error": measured.get("error"),
            "peak_mib": round(measured["peak_mib"], 1) if "peak_mib" in measured else None,
            "seconds": {f"{r['sampler']}-{r['steps']}": (round(r["seconds"], 3) if "seconds" in r else None)
                        for r in measured["rows"]},
            "extrapolated": [f"{r['sampler']}-{r['steps']}" for r in measured["rows"] if r.get("complete") is False],
            "rows": [clean(r) for r in measured["rows"]],
        },
        "derived_reconstruction": derived,
        "load_average": loads, "total_s": round(total, 1),
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
