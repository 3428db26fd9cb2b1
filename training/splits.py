"""Train / validation / test splits of the prepared cases; groups never straddle splits.

* LIDC cases named in X2CT-GAN's published split (``splits/x2ct_gan_lidc_*.txt``, 916 train /
  102 test case ids) keep it: train stays train (a seeded ``val_fraction`` of the *published*
  train list becomes validation, so it does not depend on which cases are present), test is test.
* Every other case is split by group with a seeded hash: a group's split depends only on the
  seed and its name, so adding cases later never moves a group to another split.
* ``test_groups`` forces groups into test. A group whose cases would land in several splits
  goes to the most held-out one (test, then val).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from DiffuX2CTLib.errors import InputError

from .cache import CaseRecord

SPLIT_DIR = Path(__file__).resolve().parent / "splits"
X2CT_TRAIN = SPLIT_DIR / "x2ct_gan_lidc_train.txt"
X2CT_TEST = SPLIT_DIR / "x2ct_gan_lidc_test.txt"
_RANK = {"train": 0, "val": 1, "test": 2}


def load_id_list(path: str | Path) -> list[str]:
    """Case ids of a split file: one per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(path, f"cannot read the split list ({exc.strerror or exc})") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@functools.lru_cache(maxsize=1)
def _published() -> tuple[tuple[str, str], ...]:
    split = {case_id: "train" for case_id in load_id_list(X2CT_TRAIN)}
    split.update({case_id: "test" for case_id in load_id_list(X2CT_TEST)})
    return tuple(split.items())


def x2ct_gan_lidc_split() -> dict[str, str]:
    """X2CT-GAN's published LIDC split: ``case_id -> "train" | "test"`` (916 + 102 ids)."""
    return dict(_published())


def x2ct_gan_case_id(patient: str, study_date: str, series_number: str) -> tuple[str, str]:
    """The X2CT-GAN id of an LIDC CT series, and how it was matched.

    Published ids read ``LIDC-IDRI-NNNN.<StudyDate>.<SeriesNumber>.<suffix>``. The id whose
    ``<StudyDate>.<SeriesNumber>.`` matches is used (``"series"``); else the only published id of
    the patient (``"patient"``); else ``LIDC-IDRI-NNNN.<StudyDate>.<SeriesNumber>`` (``"none"``).
    """
    from .cache import safe_case_id

    own = [i for i in x2ct_gan_lidc_split() if i.split(".", 1)[0] == patient]
    prefix = f"{patient}.{study_date}.{series_number}."
    exact = [i for i in own if i.startswith(prefix)]
    if study_date and series_number and len(exact) == 1:
        return exact[0], "series"
    if len(own) == 1:
        return own[0], "patient"
    parts = [patient] + [p for p in (study_date, series_number) if p]
    return safe_case_id(".".join(parts)), "none"


def _unit(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) fixed by ``seed`` and ``parts`` (SHA-256)."""
    text = "/".join([str(int(seed)), *parts]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") / 2.0**64


@dataclass
class SplitResult:
    splits: dict[str, str]
    method: str
    params: dict[str, Any] = field(default_factory=dict)


def _published_id(record: CaseRecord) -> str:
    """The id of the scan a (possibly augmented) case descends from."""
    return str(record.extra.get("source_case_id") or record.case_id)


def make_splits(records: Sequence[CaseRecord], seed: int = 0, val_fraction: float = 0.1,
                test_fraction: float = 0.1, test_groups: Iterable[str] = ()) -> SplitResult:
    """Assign every record to ``train``, ``val`` or ``test`` (see the module docstring)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError(None, f"split fractions must be in [0, 1) with a sum below 1 "
                               f"(val {val_fraction}, test {test_fraction})")
    forced = {g.strip() for g in test_groups if g.strip()}
    published = x2ct_gan_lidc_split()
    train_list = sorted(i for i, s in published.items() if s == "train")
    order = np.random.default_rng(int(seed)).permutation(len(train_list))
    published_val = {train_list[i] for i in order[: int(round(val_fraction * len(train_list)))]}

    splits: dict[str, str] = {}
    n_published = 0
    for record in records:
        pid = _published_id(record)
        if record.group in forced:
            split = "test"
        elif record.dataset == "lidc" and pid in published:
            n_published += 1
            split = "val" if pid in published_val else published[pid]
        else:
            u = _unit(seed, "group", record.group)
            split = "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"
        splits[record.case_id] = split

    by_group: dict[str, str] = {}
    for record in records:
        current = by_group.get(record.group, "train")
        if _RANK[splits[record.case_id]] > _RANK[current]:
            current = splits[record.case_id]
        by_group[record.group] = current
    moved = 0
    for record in records:
        if splits[record.case_id] != by_group[record.group]:
            splits[record.case_id] = by_group[record.group]
            moved += 1

    n_other = len(records) - n_published
    method = ("x2ct-gan-lidc" if n_published and not n_other else
              "x2ct-gan-lidc+seeded-group" if n_published else "seeded-group")
    params: dict[str, Any] = {"seed": int(seed), "val_fraction": float(val_fraction),
                              "test_fraction": float(test_fraction), "test_groups": sorted(forced),
                              "cases_moved_to_keep_groups_together": moved}
    if n_published:
        params.update(x2ct_gan_cases=n_published, x2ct_gan_source="https://github.com/kylekma/X2CT "
                                                                  "3DGAN/data/{train,test}.txt")
    return SplitResult(splits, method, params)


__all__ = ["X2CT_TRAIN", "X2CT_TEST", "load_id_list", "x2ct_gan_lidc_split", "x2ct_gan_case_id",
           "SplitResult", "make_splits"]
