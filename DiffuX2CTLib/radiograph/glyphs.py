"""A 5 x 7 block font drawn with numpy, for burned-in radiograph labels (no font files needed).

Each glyph is 7 rows of 5 dots; ``#`` is ink. Text is rendered to a boolean mask whose dots are
scaled to a requested letter height in millimetres on the detector, so a label has the same
physical size whatever the pixel pitch (at least one pixel per dot).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np

from ..errors import InputError

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]
CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")

GLYPH_ROWS, GLYPH_COLS = 7, 5
_GAP_COLS, _GAP_ROWS = 1, 2  # dots between characters / between lines

# fmt: off
_FONT_ROWS: dict[str, str] = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    " ": "..... ..... ..... ..... ..... ..... .....",
    "-": "..... ..... ..... ##### ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "/": "....# ....# ...#. ..#.. .#... #.... #....",
}
# fmt: on

GLYPHS: dict[str, np.ndarray] = {
    ch: np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool) for ch, rows in _FONT_ROWS.items()
}
SUPPORTED_CHARACTERS = "".join(sorted(GLYPHS))


def text_bitmap(lines: Sequence[str]) -> np.ndarray:
    """Dot bitmap ``(dots_rows, dots_cols)`` of left-aligned text lines (lower case is upper-cased)."""
    lines = [str(line).upper() for line in lines]
    bad = sorted({ch for line in lines for ch in line if ch not in GLYPHS})
    if bad:
        raise InputError(None, f"label text has characters {bad} outside the built-in font {SUPPORTED_CHARACTERS!r}")
    if not lines or not any(lines):
        return np.zeros((0, 0), dtype=bool)
    width = max(len(line) for line in lines) * (GLYPH_COLS + _GAP_COLS) - _GAP_COLS
    height = len(lines) * (GLYPH_ROWS + _GAP_ROWS) - _GAP_ROWS
    out = np.zeros((height, width), dtype=bool)
    for i, line in enumerate(lines):
        r = i * (GLYPH_ROWS + _GAP_ROWS)
        for j, ch in enumerate(line):
            c = j * (GLYPH_COLS + _GAP_COLS)
            out[r:r + GLYPH_ROWS, c:c + GLYPH_COLS] = GLYPHS[ch]
    return out


def render_text_mask(
    lines: Sequence[str],
    shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    *,
    height_mm: float,
    corner: Corner,
    inset_mm: tuple[float, float],
) -> np.ndarray:
    """Boolean ``shape`` mask of ``lines`` placed in a corner of the image.

    Args:
        lines: text lines (characters of :data:`SUPPORTED_CHARACTERS`).
        shape: image ``(rows, cols)``.
        spacing_mm: pixel pitch ``(row, col)`` in mm on the detector.
        height_mm: letter height (7 dots) in mm; each dot is at least one pixel.
        corner: which image corner the block is anchored to (row 0 is the top).
        inset_mm: distance ``(rows, cols)`` in mm from that corner to the block.

    The block is cropped where it does not fit the image.
    """
    if corner not in CORNERS:
        raise InputError(None, f"label corner must be one of {CORNERS}, got {corner!r}")
    rows, cols = shape
    mask = np.zeros(shape, dtype=bool)
    bitmap = text_bitmap(lines)
    if bitmap.size == 0:
        return mask
    dot_r = max(1, int(round(height_mm / GLYPH_ROWS / spacing_mm[0])))
    dot_c = max(1, int(round(height_mm / GLYPH_ROWS / spacing_mm[1])))
    block = np.kron(bitmap, np.ones((dot_r, dot_c), dtype=bool))
    h, w = block.shape
    off_r = int(math.floor(inset_mm[0] / spacing_mm[0] + 0.5))
    off_c = int(math.floor(inset_mm[1] / spacing_mm[1] + 0.5))
    r0 = off_r if corner.startswith("top") else rows - off_r - h
    c0 = off_c if corner.endswith("left") else cols - off_c - w
    # crop the block to the image
    br0, bc0 = max(0, -r0), max(0, -c0)
    ir0, ic0 = max(0, r0), max(0, c0)
    ir1, ic1 = min(rows, r0 + h), min(cols, c0 + w)
    if ir1 > ir0 and ic1 > ic0:
        mask[ir0:ir1, ic0:ic1] = block[br0:br0 + ir1 - ir0, bc0:bc0 + ic1 - ic0]
    return mask


__all__ = ["CORNERS", "Corner", "GLYPHS", "SUPPORTED_CHARACTERS", "render_text_mask", "text_bitmap"]
