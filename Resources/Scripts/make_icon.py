"""Draw the DiffuX2CT module icon (128 x 128 PNG): two radiographs, AP and lateral, on the left,
an arrow, and the reconstructed CT volume (a cube) on the right.

    python Resources/Scripts/make_icon.py [--out DiffuX2CT/Resources/Icons/DiffuX2CT.png]

Everything is drawn at 4x and shrunk with a Lanczos filter (smooth edges). The drawing is
deterministic: no randomness, no fonts, so rerunning it reproduces the icon. Needs numpy and Pillow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128
SCALE = 4
S = SIZE * SCALE  # drawing canvas side

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "DiffuX2CT" / "Resources" / "Icons" / "DiffuX2CT.png"

FRAME = (205, 214, 224, 255)
ARROW = (242, 153, 46, 255)
CUBE_TOP = (150, 200, 240, 255)
CUBE_LEFT = (78, 140, 200, 255)
CUBE_RIGHT = (44, 96, 158, 255)
CUBE_EDGE = (235, 244, 252, 255)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, soft: float = 0.08) -> np.ndarray:
    """1 inside the ellipse, 0 outside, with a soft rim (radiograph-like density)."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1.0 - r) / soft, 0.0, 1.0)


def radiograph(side: int, lateral: bool) -> Image.Image:
    """A schematic chest radiograph, ``side`` pixels square: bright body, dark lungs, bright spine."""
    y, x = np.mgrid[0:side, 0:side] / (side - 1.0)
    if lateral:
        body = _ellipse(x, y, 0.50, 0.60, 0.30, 0.52)
        lungs = _ellipse(x, y, 0.47, 0.50, 0.19, 0.27)
        spine = _ellipse(x, y, 0.72, 0.62, 0.05, 0.60, soft=0.3)
        heart = _ellipse(x, y, 0.38, 0.66, 0.12, 0.12, soft=0.4)
    else:
        body = _ellipse(x, y, 0.50, 0.62, 0.42, 0.55)
        lungs = np.maximum(_ellipse(x, y, 0.31, 0.50, 0.13, 0.27), _ellipse(x, y, 0.69, 0.50, 0.13, 0.27))
        spine = _ellipse(x, y, 0.50, 0.60, 0.045, 0.62, soft=0.3)
        heart = _ellipse(x, y, 0.56, 0.68, 0.13, 0.11, soft=0.4)
    density = 0.12 + 0.55 * body - 0.42 * lungs + 0.45 * spine + 0.25 * heart
    density = np.clip(density, 0.0, 1.0) ** 0.9
    grey = (255 * density).astype(np.uint8)
    rgb = np.stack([grey, grey, np.clip(grey.astype(int) + 10, 0, 255).astype(np.uint8)], axis=-1)
    return Image.fromarray(rgb, "RGB").convert("RGBA")


def _rounded_mask(side: int, radius: int) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, side - 1, side - 1), radius=radius, fill=255)
    return mask


def draw_icon() -> Image.Image:
    canvas = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    u = SCALE  # one output pixel

    # Two radiographs in a column on the left (AP above, lateral below).
    side, left, gap = 47 * u, 3 * u, 8 * u
    top = (S - 2 * side - gap) // 2
    for i, lateral in enumerate((False, True)):
        y0 = top + i * (side + gap)
        image = radiograph(side, lateral)
        canvas.paste(image, (left, y0), _rounded_mask(side, 5 * u))
        draw.rounded_rectangle((left, y0, left + side - 1, y0 + side - 1), radius=5 * u, outline=FRAME, width=2 * u)

    # The arrow, from the radiographs to the volume.
    ax0, ax1, ay = left + side + 3 * u, left + side + 20 * u, S // 2
    shaft = 3 * u
    draw.rectangle((ax0, ay - shaft, ax1 - 8 * u, ay + shaft), fill=ARROW)
    draw.polygon([(ax1 - 10 * u, ay - 10 * u), (ax1, ay), (ax1 - 10 * u, ay + 10 * u)], fill=ARROW)

    # The volume: an isometric cube with a voxel grid on its faces.
    cx, cy, a = S - 29 * u, S // 2, 26 * u  # centre and half-width
    h = a // 2  # vertical offset of the isometric top face corners
    top_c = (cx, cy - a)
    left_c, right_c = (cx - a, cy - a + h), (cx + a, cy - a + h)
    mid = (cx, cy - a + 2 * h)
    low_l, low_r, bottom = (cx - a, cy + h), (cx + a, cy + h), (cx, cy + 2 * h)
    faces = [
        ([top_c, right_c, mid, left_c], CUBE_TOP),
        ([left_c, mid, bottom, low_l], CUBE_LEFT),
        ([mid, right_c, low_r, bottom], CUBE_RIGHT),
    ]
    for poly, colour in faces:
        draw.polygon(poly, fill=colour)
    grid = (255, 255, 255, 70)
    for t in (1 / 3, 2 / 3):
        def lerp(p, q, s=t):
            return (p[0] + (q[0] - p[0]) * s, p[1] + (q[1] - p[1]) * s)
        for (p0, p1), (q0, q1) in (
            ((top_c, left_c), (right_c, mid)), ((top_c, right_c), (left_c, mid)),  # top face
            ((left_c, low_l), (mid, bottom)), ((left_c, mid), (low_l, bottom)),  # left face
            ((mid, bottom), (right_c, low_r)), ((mid, right_c), (bottom, low_r)),  # right face
        ):
            draw.line([lerp(p0, p1), lerp(q0, q1)], fill=grid, width=u)
    for poly, _ in faces:
        draw.line(poly + [poly[0]], fill=CUBE_EDGE, width=2 * u, joint="curve")

    return canvas.resize((SIZE, SIZE), Image.LANCZOS)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"PNG to write (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw_icon().save(args.out, format="PNG", optimize=True)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
