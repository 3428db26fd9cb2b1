"""The module's model list: registry models, downloads into a per-user cache, imported checkpoints.

:class:`ModelCatalog` joins three sources into one list for the module's model selector:

* the registry (``Resources/Models.json``, :mod:`DiffuX2CTLib.registry`): ``file`` entries are
  shipped next to the registry, ``url`` entries are downloaded on request;
* the per-user model cache, ``<default_cache_dir()>/models`` (``$DIFFUX2CT_CACHE/models`` when
  that variable is set), laid out as :func:`DiffuX2CTLib.registry.resolve_file` expects::

      <cache>/<sha256[:16]>/NAME.safetensors + NAME.json   downloaded url entries
      <cache>/imported/ID.safetensors + ID.json            checkpoints imported by the user
      <cache>/imported.json                                the user catalogue of imported models

  ``imported.json`` is itself a model registry (same format, read just as strictly) whose
  ``file`` entries are relative to the cache folder, so imported models are verified with the
  same code as shipped ones.

Downloads. Nothing is ever downloaded except by :meth:`ModelCatalog.path_for` on a ``url``
entry (the user's explicit click). The checkpoint description is fetched from the weights URL
with the final ``.safetensors`` replaced by ``.json`` (the registry requires ``url`` to end in
``.safetensors``; see :func:`sidecar_url`). Both files stream into temporary files in the
destination folder while their SHA-256 is computed; they are renamed into place only when both
digests (and the weights' size) equal the registry's, the description first and the weights
last. A failure or a cancel removes the temporary files (and the folder, when it was created
for the download), so nothing half-written is ever left.

A cached file is checked again (size and SHA-256) every time it is used. A file that differs is
refused with one line naming it; it is replaced only when the caller asks to re-download
(``path_for(..., redownload=True)``), never deleted on its own.

Nothing here imports Qt, torch or numpy at file scope.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import http.client
import json
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from DiffuX2CTLib.errors import CancelledError, CheckpointError, InputError
from DiffuX2CTLib.io.atomic import atomic_file
from DiffuX2CTLib.io.files import default_cache_dir, sha256_file
from DiffuX2CTLib.registry import (
    GeometryRef, Metrics, ModelEntry, ModelRegistry, Resolution, TrainingData, default_registry_path,
    load_registry, resolve_file, verify,
)

#: ``(bytes_done, bytes_total)``; ``bytes_total`` is 0 while unknown.
ProgressCallback = Callable[[int, int], None]
#: Returns True when the user asked to stop.
CancelCallback = Callable[[], bool]

IMPORTED_FOLDER = "imported"
IMPORTED_CATALOG = "imported.json"
SOURCE_REGISTRY = "registry"
SOURCE_IMPORTED = "imported"

_CHUNK = 1 << 20
_MAX_SIDECAR_BYTES = 16 << 20  # a checkpoint description is a few kB
_MAX_SAFETENSORS_HEADER = 100 << 20
_DOWNLOAD_FOLDER_RE = re.compile(r"^[0-9a-f]{16}$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.safetensors$")
_ID_CHARS_RE = re.compile(r"[^a-z0-9._-]+")
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def default_model_cache_dir() -> Path:
    """``<default_cache_dir()>/models``: where downloaded and imported models are kept."""
    return default_cache_dir() / "models"


def sidecar_url(url: str) -> str:
    """URL of the checkpoint description of a ``url`` entry: the weights URL with its final
    ``.safetensors`` replaced by ``.json`` (``https://host/m/NAME.safetensors`` ->
    ``https://host/m/NAME.json``)."""
    if not url.endswith(".safetensors"):
        raise InputError(None, f"model URL {url!r} does not end in .safetensors")
    return url[: -len(".safetensors")] + ".json"


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def _format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"


# --- one line of the model list ---------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogEntry:
    """One model of the module's list (a registry entry or an imported checkpoint).

    Attributes:
        entry: the registry's :class:`~DiffuX2CTLib.registry.ModelEntry` (for imported models, the
            one recorded in ``imported.json``).
        source: ``"registry"`` or ``"imported"``.
        is_default: True for the registry's default model (listed first).
        available: both files are on this computer (not yet checksum-verified; :meth:`ModelCatalog.path_for` does that).
        weights_path: where the ``.safetensors`` file is or will be downloaded to (``NAME.json`` beside it).
    """

    entry: ModelEntry
    source: str
    is_default: bool
    available: bool
    weights_path: Path

    # --- fields for the GUI ------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def display_name(self) -> str:
        """``"NAME (version V)"``."""
        return f"{self.entry.name} (version {self.entry.version})"

    @property
    def label(self) -> str:
        """Text of the model selector's item: display name, ``[default]`` mark, and whether a download is needed."""
        text = self.display_name
        if self.is_default:
            text += " [default]"
        if self.source == SOURCE_IMPORTED:
            text += " [imported]"
        if self.is_download and not self.available:
            text += f" - download {_human_bytes(self.entry.size_bytes)}"
        return text

    @property
    def license(self) -> str:
        return self.entry.license

    @property
    def geometry_preset(self) -> str:
        return self.entry.geometry.preset

    @property
    def resolution_text(self) -> str:
        r = self.entry.resolution
        return (f"{r.volume_size}^3 voxels of {r.voxel_mm:g} mm from {r.xray_size} x {r.xray_size} "
                "AP and lateral radiographs")

    @property
    def training_data_text(self) -> str:
        t = self.entry.training_data
        text = t.description.strip()
        if t.datasets:
            text += ("" if not text or text.endswith(".") else ".") + " Datasets: " + ", ".join(t.datasets) + "."
        return text or "not recorded"

    @property
    def metrics(self) -> dict[str, float]:
        """Held-out metric values (empty when the model was not evaluated)."""
        return {} if self.entry.metrics is None else dict(self.entry.metrics.values)

    @property
    def metrics_text(self) -> str:
        m = self.entry.metrics
        if m is None or not m.values:
            return "not evaluated"
        values = ", ".join(f"{name} {_format_number(v)}" for name, v in m.values.items())
        how = f"{m.split or 'held-out'} split, {m.num_cases} case{'s' if m.num_cases != 1 else ''}"
        if m.sampler:
            how += f", {m.sampler}" + (f" {m.steps} steps" if m.steps else "")
        return f"{values} ({how})"

    @property
    def sha256(self) -> str:
        return self.entry.sha256

    @property
    def file(self) -> str | None:
        return self.entry.file

    @property
    def url(self) -> str | None:
        return self.entry.url

    @property
    def is_download(self) -> bool:
        """True for models fetched from a URL (the user opts in by choosing one)."""
        return self.entry.url is not None

    @property
    def where_text(self) -> str:
        if self.source == SOURCE_IMPORTED:
            return f"imported by you, kept in {self.weights_path.parent}"
        if self.entry.url is not None:
            state = f"downloaded to {self.weights_path.parent}" if self.available else "not downloaded yet"
            return f"downloaded on request from {self.entry.url} ({state})"
        return "shipped with the extension" + ("" if self.available else " (file missing)")

    def tooltip(self) -> str:
        """Plain-text description of the model for the GUI (tooltip or details box)."""
        e = self.entry
        title = self.display_name + (" - default model" if self.is_default else "")
        lines = [title]
        if e.description.strip():
            lines.append(e.description.strip())
        lines += [
            f"Intended use: {e.intended_use}",
            f"Licence: {e.license}",
            f"Geometry: {e.geometry.preset} (hash {e.geometry.hash})",
            f"Resolution: {self.resolution_text}",
            f"Training data: {self.training_data_text}",
            f"Held-out metrics: {self.metrics_text}",
            f"Weights: {_human_bytes(e.size_bytes)}, SHA-256 {e.sha256}",
            f"Source: {self.where_text}",
        ]
        return "\n".join(lines)

    description = tooltip

    def to_dict(self) -> dict[str, Any]:
        """The fields above as plain values (e.g. for logging or a details table)."""
        return {"id": self.id, "display_name": self.display_name, "label": self.label, "source": self.source,
                "is_default": self.is_default, "available": self.available, "license": self.license,
                "geometry_preset": self.geometry_preset, "resolution": self.resolution_text,
                "training_data": self.training_data_text, "metrics": self.metrics, "sha256": self.sha256,
                "file": self.file, "url": self.url, "weights_path": str(self.weights_path)}


# --- the catalogue -------------------------------------------------------------------------------------
class ModelCatalog:
    """The models the module offers, the per-user model cache, downloads and imports.

    Args:
        registry_path: the model registry (default: :func:`DiffuX2CTLib.registry.default_registry_path`).
        cache_dir: the model cache (default: :func:`default_model_cache_dir`, i.e.
            ``$DIFFUX2CT_CACHE/models`` or ``~/.cache/diffux2ct/models``).
        timeout_s: network time-out of each download request.

    Reading a broken registry raises :class:`~DiffuX2CTLib.errors.InputError`; a broken
    ``imported.json`` is reported in :attr:`warnings` (the registry models stay usable).
    """

    def __init__(self, registry_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 timeout_s: float = 60.0) -> None:
        self.registry_path = Path(registry_path) if registry_path is not None else default_registry_path()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_model_cache_dir()
        self.timeout_s = timeout_s
        self.warnings: list[str] = []
        self.registry = ModelRegistry()
        self.imported = ModelRegistry()
        self.refresh()

    # --- paths ---------------------------------------------------------------------------------------
    @property
    def imported_catalog_path(self) -> Path:
        return self.cache_dir / IMPORTED_CATALOG

    @property
    def imported_dir(self) -> Path:
        return self.cache_dir / IMPORTED_FOLDER

    def _download_path(self, entry: ModelEntry) -> Path:
        """``<cache>/<sha256[:16]>/NAME.safetensors`` (NAME from the URL, as ``resolve_file`` names it;
        the model id when the URL's file name is not a plain file name)."""
        assert entry.url is not None
        name = PurePosixPath(entry.url.split("?", 1)[0]).name
        if not _SAFE_NAME_RE.match(name):
            name = f"{entry.id}.safetensors"
        return self.cache_dir / entry.sha256[:16] / name

    def _weights_path(self, entry: ModelEntry, source: str) -> Path:
        if source == SOURCE_IMPORTED:
            return resolve_file(entry, self.imported_catalog_path)
        if entry.url is not None:
            return self._download_path(entry)
        return resolve_file(entry, self.registry_path)

    # --- listing -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the registry and the user catalogue again (after an import, a delete, an update)."""
        self.warnings = []
        self.registry = load_registry(self.registry_path)
        self.imported = ModelRegistry()
        if self.imported_catalog_path.is_file():
            try:
                self.imported = load_registry(self.imported_catalog_path)
            except InputError as exc:
                self.warnings.append(f"imported models are not listed: {exc}")

    def entries(self) -> list[CatalogEntry]:
        """All models: the registry's default first, the other registry models in their order, then imported ones."""
        out: list[CatalogEntry] = []
        default = self.registry.default
        ordered = sorted(self.registry.models, key=lambda m: m.id != default)  # stable: keeps the others' order
        for entry in ordered:
            out.append(self._make(entry, SOURCE_REGISTRY, entry.id == default))
        registry_ids = set(self.registry.ids())
        for entry in self.imported.models:
            if entry.id in registry_ids:
                continue  # the registry wins; import_checkpoint never creates such a clash
            out.append(self._make(entry, SOURCE_IMPORTED, False))
        return out

    def _make(self, entry: ModelEntry, source: str, is_default: bool) -> CatalogEntry:
        weights = self._weights_path(entry, source)
        available = weights.is_file() and weights.with_suffix(".json").is_file()
        return CatalogEntry(entry=entry, source=source, is_default=is_default, available=available,
                            weights_path=weights)

    def ids(self) -> list[str]:
        return [e.id for e in self.entries()]

    def get(self, model_id: str) -> CatalogEntry:
        for e in self.entries():
            if e.id == model_id:
                return e
        raise InputError(None, f"no model {model_id!r} in the model list (known: {', '.join(self.ids()) or 'none'})")

    def default_entry(self) -> CatalogEntry | None:
        entries = self.entries()
        return entries[0] if entries and entries[0].is_default else None

    def _resolve(self, entry: CatalogEntry | str) -> CatalogEntry:
        return self.get(entry) if isinstance(entry, str) else entry

    # --- using a model -------------------------------------------------------------------------------
    def path_for(self, entry: CatalogEntry | str, progress: ProgressCallback | None = None,
                 cancel: CancelCallback | None = None, redownload: bool = False) -> Path:
        """The verified local ``.safetensors`` of a model (its ``.json`` beside it).

        ``file`` entries and imported models are checked (size, SHA-256 of both files) where they
        are. ``url`` entries are downloaded into the cache when absent (the only place this module
        touches the network), and checked again when present. A cached file that differs from the
        registry raises :class:`~DiffuX2CTLib.errors.CheckpointError` naming it, unless
        ``redownload`` is True, in which case both files are fetched again and replace it.

        Raises:
            CheckpointError: missing, truncated or modified file, or a download whose SHA-256 differs.
            InputError: the download failed (network, HTTP status, size).
            CancelledError: ``cancel()`` returned True; nothing was written.
        """
        item = self._resolve(entry)
        if item.source == SOURCE_IMPORTED:
            try:
                return verify(item.entry, self.imported_catalog_path)
            except CheckpointError as exc:
                raise CheckpointError(exc.path, f"{exc.problem}; import the checkpoint again") from None
        if item.entry.url is None:
            return verify(item.entry, self.registry_path)
        return self._download(item.entry, progress, cancel, redownload)

    def _download(self, entry: ModelEntry, progress: ProgressCallback | None, cancel: CancelCallback | None,
                  redownload: bool) -> Path:
        assert entry.url is not None
        weights = self._download_path(entry)
        sidecar = weights.with_suffix(".json")
        needed: list[tuple[Path, str, str, int | None]] = []  # (destination, url, sha256, size)
        for path, url, expected, size in ((sidecar, sidecar_url(entry.url), entry.json_sha256, None),
                                          (weights, entry.url, entry.sha256, entry.size_bytes)):
            if path.is_file() and not redownload:
                _check_cached(path, entry, expected, size)
            else:
                needed.append((path, url, expected, size))
        if not needed:
            return weights

        folder = weights.parent
        created = not folder.exists()
        tracker = _Progress(progress, entry.size_bytes if any(d == weights for d, *_ in needed) else 0)
        try:
            with contextlib.ExitStack() as stack:
                # the weights' temporary file is entered first, so that it is renamed last (after the JSON)
                temps = [(stack.enter_context(atomic_file(dest)), dest, url, sha, size)
                         for dest, url, sha, size in sorted(needed, key=lambda n: n[0] != weights)]
                for tmp, dest, url, sha, size in sorted(temps, key=lambda t: t[1] == weights):  # JSON first
                    self._fetch(url, tmp, entry, sha, size, tracker, cancel)
        except BaseException as exc:
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
            if isinstance(exc, OSError):  # the cache folder: permissions, disk full ...
                raise InputError(folder, f"cannot save the download of model {entry.id!r} "
                                         f"({exc.strerror or exc})") from None
            raise
        return weights

    def _fetch(self, url: str, tmp: Path, entry: ModelEntry, expected_sha: str, expected_size: int | None,
               tracker: "_Progress", cancel: CancelCallback | None) -> None:
        """Stream ``url`` into ``tmp`` and check its SHA-256 and size (``None``: the description, size
        unknown in advance and capped)."""
        what = f"model {entry.id!r}"
        is_sidecar = expected_size is None
        _check_cancel(cancel, entry)
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "DiffuX2CT"}),
                                              timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise InputError(url, f"download of {what} failed (HTTP {exc.code} {exc.reason})") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise InputError(url, f"download of {what} failed ({reason})") from None
        limit = _MAX_SIDECAR_BYTES if expected_size is None else expected_size
        digest = hashlib.sha256()
        got = 0
        with response:
            length = response.headers.get("Content-Length")
            announced = int(length) if length and length.strip().isdigit() else None
            if expected_size is not None and announced is not None and announced != expected_size:
                raise CheckpointError(url, f"the server offers {announced} bytes, the registry records "
                                           f"{expected_size} for {what} (wrong or replaced file); nothing was saved")
            if is_sidecar:
                tracker.sidecar_total = min(announced or 0, limit)
            tracker.emit()
            with open(tmp, "wb") as out:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise InputError(url, f"download of {what} failed ({exc or type(exc).__name__})") from None
                    if not block:
                        break
                    got += len(block)
                    if got > limit:
                        raise CheckpointError(url, f"is larger than the {limit} bytes expected for {what} "
                                                   "(wrong or replaced file); nothing was saved")
                    digest.update(block)
                    out.write(block)
                    tracker.done += len(block)
                    if is_sidecar:
                        tracker.sidecar_total = max(tracker.sidecar_total, got)
                    tracker.emit()
                    _check_cancel(cancel, entry)
        if expected_size is not None and got != expected_size:
            raise CheckpointError(url, f"downloaded {got} bytes, the registry records {expected_size} for {what} "
                                       "(truncated or replaced); nothing was saved")
        actual = digest.hexdigest()
        if actual != expected_sha:
            raise CheckpointError(url, f"downloaded file has SHA-256 {actual[:12]}..., the registry records "
                                       f"{expected_sha[:12]}... for {what} (corrupted or replaced); nothing was saved")

    # --- importing -----------------------------------------------------------------------------------
    def import_checkpoint(self, path: str | os.PathLike) -> CatalogEntry:
        """Check a user's ``NAME.safetensors`` (+ ``NAME.json`` beside it) and add it to the list.

        Checks, without torch: the pair exists and is not a pickle; the JSON is a valid checkpoint
        description (:func:`DiffuX2CTLib.checkpoint.read_checkpoint_info`: format, version,
        network, geometry hash ...); the weights file is a well-formed safetensors file (header,
        tensor sizes, no trailing or missing bytes); its SHA-256 equals the one in the JSON. The
        tensors' names and shapes are checked against the network when the model is loaded.

        The pair is copied into ``<cache>/imported/`` atomically and recorded in
        ``<cache>/imported.json``. Importing the same weights again returns the existing entry.

        Raises:
            CheckpointError: (an :class:`InputError`) one line naming the file and the problem.
        """
        from DiffuX2CTLib.checkpoint import checkpoint_paths, read_checkpoint_info

        source_weights, source_json = checkpoint_paths(path)
        try:
            info = read_checkpoint_info(source_weights)
            _check_safetensors(source_weights)
        except CheckpointError:
            raise
        except OSError as exc:
            raise CheckpointError(exc.filename or source_weights, f"cannot read the checkpoint "
                                                                  f"({exc.strerror or exc})") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(source_json, f"invalid checkpoint description ({exc})") from None
        if self.imported_catalog_path.is_file():
            imported = load_registry(self.imported_catalog_path)  # a broken catalogue is not overwritten
        else:
            imported = ModelRegistry()

        for existing in imported.models:
            if existing.sha256 == info.weights_sha256:
                try:
                    verify(existing, self.imported_catalog_path)
                except CheckpointError:
                    break  # the copy is damaged or gone: copy it again under the same id
                self.refresh()
                return self._make(existing, SOURCE_IMPORTED, False)
        else:
            existing = None

        taken = set(self.registry.ids()) | {m.id for m in imported.models if m is not existing}
        model_id = existing.id if existing is not None else _new_id(source_weights.stem, info.weights_sha256, taken)
        dest = self.imported_dir / f"{model_id}.safetensors"
        dest_json = dest.with_suffix(".json")
        try:
            json_bytes = source_json.read_bytes()
            size = source_weights.stat().st_size
        except OSError as exc:
            raise CheckpointError(exc.filename or source_json, f"cannot read the checkpoint "
                                                               f"({exc.strerror or exc})") from None
        try:  # the catalogue entry is checked before anything is copied
            entry = _imported_entry(model_id, source_weights, info, size, hashlib.sha256(json_bytes).hexdigest())
        except CheckpointError:
            raise
        except InputError as exc:
            raise CheckpointError(source_json, f"cannot be listed as a model ({exc})") from None
        try:
            with atomic_file(dest) as tmp:
                actual = _copy_hashing(source_weights, tmp)
                if actual != info.weights_sha256:
                    raise CheckpointError(source_weights, f"SHA-256 {actual[:12]}... does not match the "
                                                          f"{info.weights_sha256[:12]}... recorded in "
                                                          f"{source_json.name} (truncated, corrupted or replaced)")
            with atomic_file(dest_json) as tmp:
                tmp.write_bytes(json_bytes)
            imported.upsert(entry)
            imported.save(self.imported_catalog_path)
        except BaseException as exc:
            if existing is None:
                dest.unlink(missing_ok=True)
                dest_json.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.imported_dir.rmdir()  # only when empty
            if isinstance(exc, OSError):
                raise CheckpointError(exc.filename or source_weights, f"cannot import the checkpoint "
                                                                      f"({exc.strerror or exc})") from None
            raise
        self.refresh()
        return self._make(entry, SOURCE_IMPORTED, False)

    # --- housekeeping --------------------------------------------------------------------------------
    def _cache_files(self) -> list[Path]:
        """Files that :meth:`delete_downloaded_models` removes: download folders, imported models, imported.json."""
        if not self.cache_dir.is_dir():
            return []
        protected = {self.registry_path.resolve()}
        protected |= {resolve_file(m, self.registry_path).resolve() for m in self.registry.models if m.file}
        protected |= {p.with_suffix(".json") for p in protected}
        files: list[Path] = []
        for child in sorted(self.cache_dir.iterdir()):
            if child.is_dir() and not child.is_symlink() and (_DOWNLOAD_FOLDER_RE.match(child.name)
                                                               or child.name == IMPORTED_FOLDER):
                files += [p for p in sorted(child.rglob("*")) if p.is_file() or p.is_symlink()]
            elif child.name == IMPORTED_CATALOG and child.is_file():
                files.append(child)
        return [p for p in files if p.resolve() not in protected]

    def downloaded_size(self) -> int:
        """Bytes used by downloaded and imported models in the cache (what :meth:`delete_downloaded_models` frees)."""
        return sum(_size(p) for p in self._cache_files())

    def delete_downloaded_models(self) -> tuple[int, int]:
        """Remove downloaded and imported models (and the user catalogue) from the cache.

        The registry's shipped files are never touched. Returns ``(models, bytes)``: the number of
        ``.safetensors`` files removed and the bytes freed (all files, descriptions included).
        """
        count = freed = 0
        files = self._cache_files()
        for p in files:
            size = _size(p)
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.warnings.append(f"{p}: could not delete ({exc})")
                continue
            freed += size
            if p.suffix == ".safetensors" and not p.name.startswith("."):
                count += 1
        for folder in sorted({p.parent for p in files}, key=lambda d: len(d.parts), reverse=True):
            while folder != self.cache_dir and self.cache_dir in folder.parents:
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent
        self.refresh()
        return count, freed


# --- helpers ------------------------------------------------------------------------------------------
class _Progress:
    """Byte counts of one download (description + weights) for the progress callback."""

    def __init__(self, callback: ProgressCallback | None, weights_total: int) -> None:
        self.callback = callback
        self.weights_total = weights_total
        self.sidecar_total = 0
        self.done = 0

    def emit(self) -> None:
        if self.callback is not None:
            self.callback(self.done, self.weights_total + self.sidecar_total)


def _size(p: Path) -> int:
    try:
        return p.lstat().st_size
    except OSError:
        return 0


def _check_cancel(cancel: CancelCallback | None, entry: ModelEntry) -> None:
    if cancel is not None and cancel():
        raise CancelledError(f"download of model {entry.id!r} cancelled; nothing was saved")


def _check_cached(path: Path, entry: ModelEntry, expected_sha: str, expected_size: int | None) -> None:
    """Refuse a cached download that differs from the registry (it is left in place)."""
    advice = "re-download the model to replace it"
    if expected_size is not None:
        size = path.stat().st_size
        if size != expected_size:
            raise CheckpointError(path, f"cached file of model {entry.id!r} has {size} bytes, the registry records "
                                        f"{expected_size} (truncated or modified); {advice}")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise CheckpointError(path, f"cached file of model {entry.id!r} has SHA-256 {actual[:12]}..., the registry "
                                    f"records {expected_sha[:12]}... (corrupted or modified); {advice}")


def _copy_hashing(source: Path, dest: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(dest, "wb") as out:
        while block := src.read(_CHUNK):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _check_safetensors(path: Path) -> None:
    """A well-formed safetensors file: 8-byte header length, JSON header, tensor byte ranges that
    fit their dtype and shape and tile the data section exactly. Pickles and zips are refused."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise CheckpointError(path, "is a zip/pickle file, not safetensors; DiffuX2CT never unpickles checkpoints")
        if len(head) < 8:
            raise CheckpointError(path, f"is not a safetensors file (only {size} bytes)")
        n = int.from_bytes(head, "little")
        if n < 2 or n > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise CheckpointError(path, f"is not a safetensors file (header length {n} does not fit the "
                                        f"{size}-byte file; truncated or another format)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(path, "is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "is not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    if not header:
        raise CheckpointError(path, "holds no tensors")
    spans: list[tuple[int, int]] = []
    for name, t in header.items():
        ok = (isinstance(t, dict) and isinstance(t.get("dtype"), str) and isinstance(t.get("shape"), list)
              and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in t["shape"])
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in t["data_offsets"]))
        if not ok:
            raise CheckpointError(path, f"is not a valid safetensors file (bad header record of tensor {name!r})")
        start, end = t["data_offsets"]
        itemsize = _DTYPE_BYTES.get(t["dtype"])
        if itemsize is not None and end - start != itemsize * math.prod(t["shape"]):
            raise CheckpointError(path, f"tensor {name!r} ({t['dtype']} {t['shape']}) does not fit its "
                                        f"{end - start}-byte range (corrupted file)")
        spans.append((start, end))
    position = 0
    for start, end in sorted(spans):
        if start != position or end < start:
            raise CheckpointError(path, "is not a valid safetensors file (tensor byte ranges overlap or leave gaps)")
        position = end
    data_bytes = size - 8 - n
    if position != data_bytes:
        raise CheckpointError(path, f"tensor data ends at byte {position}, the file holds {data_bytes} data bytes "
                                    "(truncated or corrupted)")


def _new_id(stem: str, sha256: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    slug = _ID_CHARS_RE.sub("-", stem.lower()).strip("-._") or "model"
    base = ("imported-" + slug)[:64].rstrip("-._")
    candidates = [base, f"{base[:55].rstrip('-._')}-{sha256[:8]}"]
    candidates += [f"{base[:50].rstrip('-._')}-{sha256[:8]}-{i}" for i in range(2, 1000)]
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    raise InputError(None, "too many imported models with the same name")  # pragma: no cover


def _imported_entry(model_id: str, source: Path, info: Any, size: int, json_sha: str) -> ModelEntry:
    """The user-catalogue entry of an imported checkpoint, filled from its description."""
    training = info.training if isinstance(info.training, dict) else {}
    export = training.get("export") if isinstance(training.get("export"), dict) else {}
    metrics = None
    if isinstance(export.get("metrics"), dict):
        try:
            metrics = Metrics.from_dict(export["metrics"])
            metrics.validate()
        except InputError:
            metrics = None
    datasets = training.get("datasets")
    datasets = tuple(datasets) if isinstance(datasets, list) and all(isinstance(d, str) for d in datasets) else ()
    description = training.get("data_description")
    if not isinstance(description, str) or not description.strip():
        description = "not recorded in the checkpoint"
    version = export.get("model_version")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    note = "" if info.trained else " Its description says the weights are untrained (random)."
    geometry = info.geometry
    return ModelEntry(
        id=model_id, name=source.stem, version=version if isinstance(version, str) and version.strip() else "imported",
        description=f"Checkpoint imported from {source} on {now[:10]}.{note}",
        license=info.license.strip() or "unknown",
        intended_use="unknown: imported by the user, not reviewed by DiffuX2CT; not for clinical use",
        geometry=GeometryRef(preset=geometry.name or "custom", hash=geometry.hash),
        resolution=Resolution(volume_size=info.network.volume_size, xray_size=info.network.xray_size,
                              voxel_mm=float(max(geometry.volume_spacing_mm))),
        training_data=TrainingData(description=description, datasets=datasets),
        metrics=metrics, sha256=info.weights_sha256, json_sha256=json_sha, size_bytes=size, created=now,
        file=f"{IMPORTED_FOLDER}/{model_id}.safetensors",
    )


__all__ = [
    "CatalogEntry", "ModelCatalog", "ProgressCallback", "CancelCallback", "default_model_cache_dir", "sidecar_url",
]
