"""Upgrade an inference checkpoint's JSON to the current format (adds the digest); weights untouched.

    python -m training.upgrade_checkpoint NAME.safetensors [--registry Resources/Models.json]

The checkpoint is validated completely first (:func:`DiffuX2CTLib.checkpoint.load_checkpoint`:
the weights' SHA-256, names, shapes and dtypes), so a corrupt or edited pair is refused rather
than given a digest. Then ``NAME.json`` is rewritten atomically as format version 2 with its
``digest``; ``NAME.safetensors`` keeps its exact bytes. With ``--registry``, the entry whose
``sha256`` is the weights' SHA-256 gets the new ``json_sha256`` and the ``digest``, and the
registry is rewritten atomically (as registry format version 2) and verified. This is how the
committed demo model ``Resources/Models/diffux2ct-demo-clinical-32`` was upgraded. Any error:
one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from DiffuX2CTLib.errors import DiffuX2CTError, InputError, error_line


def upgrade(weights: Path, registry_path: Path | None) -> dict[str, Any]:
    import dataclasses

    from DiffuX2CTLib.checkpoint import read_checkpoint_info, upgrade_checkpoint
    from DiffuX2CTLib.io.files import sha256_file
    from DiffuX2CTLib.registry import load_registry, verify

    registry = None if registry_path is None else load_registry(registry_path)  # a broken registry: stop first
    weights_path, json_path = upgrade_checkpoint(weights)
    info = read_checkpoint_info(weights_path)
    result: dict[str, Any] = {"weights": str(weights_path), "json": str(json_path), "digest": info.digest,
                              "weights_sha256": info.weights_sha256, "registry_entry": None}
    if registry is not None and registry_path is not None:
        matches = [m for m in registry.models if m.sha256 == info.weights_sha256]
        if not matches:
            raise InputError(registry_path, f"no model has the SHA-256 {info.weights_sha256[:12]}... of {weights_path.name}")
        for entry in matches:
            registry.upsert(dataclasses.replace(entry, json_sha256=sha256_file(json_path), digest=info.digest))
        registry.save(registry_path)
        for entry in matches:
            if entry.file is not None:
                verify(registry.get(entry.id), registry_path)
        result["registry_entry"] = [m.id for m in matches]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.upgrade_checkpoint", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="NAME.safetensors (NAME.json beside it is rewritten)")
    p.add_argument("--registry", type=Path, default=None, help="registry whose entry for these weights is updated")
    args = p.parse_args(argv)
    try:
        result = upgrade(args.checkpoint, args.registry)
    except (DiffuX2CTError, OSError) as exc:
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
