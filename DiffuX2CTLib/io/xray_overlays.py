"""Find burned-in labels and collimation borders in a film, and keep them out of the statistics.

Works on a line-integral estimate (bright = dense, see :mod:`~DiffuX2CTLib.io.xray_encoding`),
in pixels of the image as stored. With ``R`` = P99.5 - P0.5 of the image:

* **Collimation border**: rows (columns) at an image edge that are *uniform* (P90 - P10 of the
  line <= 3% of ``R``) and *bright* (median above the middle of the range; a collimator blocks
  the beam, so the shuttered area looks dense), scanned inwards from each edge, at most 30% of
  the side per edge. Dark (air-like) borders, e.g. electronic masking, are left alone: they
  already look like air to the model. Tilted collimator edges are not detected.
* **Burned-in label**: a connected group (8-neighbours) of pixels at the image maximum, or of a
  bright flat plateau (3 x 3 neighbourhood constant), that is small (<= 2% of the image, box at
  most 25% of the rows and 40% of the columns), lies in the outer quarter of the image (labels
  sit near edges and corners) and stands out from its surroundings by >= 25% of ``R``. Saturated
  anatomy fails the contrast test (its neighbours are nearly as bright). The mask is grown by
  one pixel for anti-aliased edges.

:func:`mask_overlays` fills labels from the nearest valid pixel and the collimated area with the
image's air level (P0.5 of the valid pixels; the model never saw a collimator), and sets
``valid_mask`` so that :class:`~DiffuX2CTLib.io.xray.XRayNormalization` leaves both out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .xray import XRayImage

MAX_BAND_FRACTION = 0.3
#: Segments per line; a line's level is the 25th percentile of its segments' means.
SEGMENTS = 16
LINE_QUANTILE = 25.0
#: The central part of the image (this fraction cut off each side) holds the anatomy reference.
CENTRE_CUT = 0.3
#: A band's level must be at least the anatomy's 99th percentile less this fraction of its range ...
DENSE_TOLERANCE = 0.05
#: ... and step down into the field by at least this fraction of the anatomy's range.
MIN_STEP = 0.15
#: The segments of an unexposed line spread (P90 - P10) over at most this fraction of the step.
MAX_BAND_SPREAD = 0.8
#: The penumbra is searched for within this fraction of the side inside the band's core ...
PENUMBRA_FRACTION = 0.03
#: ... and ends where the line level is within this fraction of the anatomy's range of the field's trend.
PENUMBRA_EXCESS = 0.04
LABEL_MAX_AREA = 0.02
LABEL_MAX_HEIGHT = 0.25
LABEL_MAX_WIDTH = 0.4
LABEL_BORDER_ZONE = 0.25
LABEL_MIN_CONTRAST = 0.25
LABEL_MIN_CONTRAST_EXTREME = 0.1
LABEL_MIN_PIXELS = 4
LABEL_RING = 2
LABEL_BACKGROUND_PERCENTILE = 75.0
SIDES = ("top", "bottom", "left", "right")


@dataclass
class Overlays:
    """Masks (bool, image shape) of burned-in labels and collimation, and the band widths (px)."""

    labels: np.ndarray
    collimation: np.ndarray
    bands: dict[str, int] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return bool(self.labels.any() or self.collimation.any())


def _segment_means(lines: np.ndarray, segments: int = SEGMENTS) -> np.ndarray:
    """``(n, k)`` means of ``k = min(segments, m)`` equal segments of each of ``n`` lines of length ``m``
    (the segments centred, a remainder of fewer than ``k`` pixels left out)."""
    n, m = lines.shape
    k = max(1, min(segments, m))
    length = m // k
    start = (m - k * length) // 2
    return lines[:, start:start + k * length].reshape(n, k, length).mean(axis=2)


def _line_levels(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(levels, segments)``: each line's segment means and its level, the 25th percentile of them
    (75% of the line at least as dense)."""
    if lines.shape[1] == 0:
        return np.full(lines.shape[0], -np.inf), np.full((lines.shape[0], 1), -np.inf)
    segments = _segment_means(lines)
    return np.percentile(segments, LINE_QUANTILE, axis=1), segments


def _trend(q: np.ndarray, start: int, g: int) -> np.ndarray:
    """The field's level just inside ``start`` (``g + 1`` lines from ``start``): the straight line
    through ``q[start + g : start + 2g]`` extended outwards, never below that window's minimum."""
    window = q[start + g:start + 2 * g]
    if window.size == 0:
        return np.full(g + 1, -np.inf)
    if window.size < 2:
        return np.full(g + 1, float(window[0]))
    slope, intercept = np.polyfit(np.arange(window.size, dtype=np.float64), window, 1)
    return np.maximum(intercept + slope * np.arange(-g, 1, dtype=np.float64), window.min())


def _core(q: np.ndarray, segments: np.ndarray, limit: int, g: int, dense: float, scale: float) -> tuple[int, float]:
    """``(width, level)`` of the unexposed core of one side's band from its line levels ``q``; (0, nan) if none."""
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import ndimage

    last = min(limit, q.size - 2 * g)
    if last < 1:
        return 0, float("nan")
    smooth = ndimage.median_filter(q, size=3, mode="nearest")
    lowest_outside = np.minimum.accumulate(smooth)[:last]  # min of lines 0..w-1
    highest_inside = sliding_window_view(smooth, g)[g + 1:g + 1 + last].max(axis=1)  # max of lines w+g..w+2g-1
    score = lowest_outside - highest_inside
    w = int(last - np.argmax(score[::-1]))  # the widest of the best splits
    if not score[w - 1] > 0:
        return 0, float("nan")
    level = float(np.median(q[:w]))
    inside = float(np.median(q[w + g:w + 2 * g]))
    if level < dense or level - inside < MIN_STEP * scale:
        return 0, float("nan")
    threshold = 0.5 * (level + inside)
    core = 0
    while core < limit and (q[core] >= threshold or (0 < core < limit - 1 and q[core + 1] >= threshold)):
        core += 1
    # unexposed lines are flat along their length; dense anatomy (an abdomen at the film's edge) is not
    low, high = np.percentile(segments[:max(1, core)].mean(axis=0), [10, 90])  # noise averages out
    if core == 0 or high - low > MAX_BAND_SPREAD * (level - inside):
        return 0, float("nan")
    return core, level


def _penumbra(q: np.ndarray, start: int, limit: int, g: int, scale: float) -> int:
    """Lines from ``start`` on that are still denser than the field's trend (at most ``g``)."""
    trend = _trend(q, start, g)
    n = 0
    while n < g and start + n < limit:
        r = start + n
        if q[r] - trend[n] <= PENUMBRA_EXCESS * scale or (n > 0 and q[r] > q[r - 1] + PENUMBRA_EXCESS * scale):
            break
        n += 1
    return n


def find_collimation(x: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Dense bands along the edges of ``x`` that step down into the field (see the module docstring)."""
    rows, cols = x.shape
    mask = np.zeros(x.shape, dtype=bool)
    bands = dict.fromkeys(SIDES, 0)
    if rows < 8 or cols < 8:
        return mask, bands
    r0, c0 = int(CENTRE_CUT * rows), int(CENTRE_CUT * cols)
    centre = x[r0:rows - r0, c0:cols - c0]
    pieces = np.concatenate([_segment_means(centre, max(1, centre.shape[1] * SEGMENTS // cols)).ravel(),
                             _segment_means(centre.T, max(1, centre.shape[0] * SEGMENTS // rows)).ravel()])
    low, dense = np.percentile(pieces, [1, 99])
    lo, hi = np.percentile(x, [0.5, 99.5])
    scale = max(dense - low, 1e-3 * (hi - lo))
    if not scale > 0:
        return mask, bands
    length = {"top": rows, "bottom": rows, "left": cols, "right": cols}
    limits = {s: int(MAX_BAND_FRACTION * length[s]) for s in SIDES}
    reach = {s: max(2, int(round(PENUMBRA_FRACTION * length[s]))) for s in SIDES}
    widths = dict(bands)
    for _ in range(2):  # a band on one side raises the levels of the other sides' lines
        t, b, l, r = (widths[s] for s in SIDES)
        views = {"top": x[:, l:cols - r], "bottom": x[::-1, l:cols - r],
                 "left": x[t:rows - b, :].T, "right": x[t:rows - b, ::-1].T}
        profiles = {s: _line_levels(views[s][:min(limits[s] + 2 * reach[s] + 1, length[s])]) for s in SIDES}
        levels = {s: profiles[s][0] for s in SIDES}
        cores = {s: _core(*profiles[s], limits[s], reach[s], dense - DENSE_TOLERANCE * scale, scale) for s in SIDES}
        found = [level for width, level in cores.values() if width > 0]
        if not found:
            return mask, bands
        unexposed = max(found)
        new = {}
        for s in SIDES:
            q, (core, _), g = levels[s], cores[s], reach[s]
            if core == 0:  # a thin band (less than a line unexposed): only its penumbra shows
                edge = _trend(q, 0, g)[0]
                if q[0] - edge < max(2 * PENUMBRA_EXCESS * scale, 0.03 * (unexposed - edge)):
                    new[s] = 0
                    continue
            new[s] = min(core + _penumbra(q, core, limits[s], g, scale), limits[s])
        widths = new
    mask[:widths["top"]] = True
    mask[rows - widths["bottom"]:] = True
    mask[:, :widths["left"]] = True
    mask[:, cols - widths["right"]:] = True
    return mask, widths


def _plateaus(x: np.ndarray, valid: np.ndarray, candidates: np.ndarray, sign: int, contrast: float,
              field_box: tuple[int, int, int, int]) -> np.ndarray:
    """The groups of ``candidates`` that look like burned-in labels; ``sign`` +1 for labels brighter
    than their surroundings, -1 for darker ones (see the module docstring)."""
    from scipy import ndimage

    rows, cols = x.shape
    top, bottom, left, right = field_box
    keep = np.zeros(x.shape, dtype=bool)
    components, count = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return keep
    area = np.bincount(components.ravel(), minlength=count + 1)
    ring = np.ones((2 * LABEL_RING + 1,) * 2, dtype=bool)
    for i, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None or not LABEL_MIN_PIXELS <= area[i] <= LABEL_MAX_AREA * x.size:
            continue
        height, width = box[0].stop - box[0].start, box[1].stop - box[1].start
        if height > max(1, LABEL_MAX_HEIGHT * rows) or width > max(1, LABEL_MAX_WIDTH * cols):
            continue
        r, c = (box[0].start + box[0].stop - 1) / 2, (box[1].start + box[1].stop - 1) / 2
        if not (min(r - top, bottom - r) <= LABEL_BORDER_ZONE * (bottom - top + 1)
                or min(c - left, right - c) <= LABEL_BORDER_ZONE * (right - left + 1)):
            continue
        # its surroundings: valid non-candidate pixels within LABEL_RING pixels
        outer = tuple(slice(max(0, s.start - LABEL_RING), min(n, s.stop + LABEL_RING)) for s, n in zip(box, x.shape))
        own = components[outer] == i
        around = ndimage.binary_dilation(own, structure=ring) & valid[outer] & ~candidates[outer]
        if not around.any():
            continue
        values = sign * x[outer]
        background = np.percentile(values[around], LABEL_BACKGROUND_PERCENTILE)
        if values[own].mean() - background >= contrast:
            keep[outer] |= own
    return keep


def find_labels(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Burned-in labels among the ``valid`` pixels of ``x`` (see the module docstring)."""
    from scipy import ndimage

    labels = np.zeros(x.shape, dtype=bool)
    if valid.sum() < 4:
        return labels
    inside = x[valid]
    lo, hi = np.percentile(inside, [0.5, 99.5])
    span = hi - lo
    if not span > 0:
        return labels
    in_rows, in_cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    box = (in_rows[0], in_rows[-1], in_cols[0], in_cols[-1])  # the exposed field
    top, bottom = x >= inside.max(), x <= inside.min()
    labels = (_plateaus(x, valid, valid & top, 1, LABEL_MIN_CONTRAST_EXTREME * span, box)
              | _plateaus(x, valid, valid & bottom, -1, LABEL_MIN_CONTRAST_EXTREME * span, box))
    flat = ndimage.maximum_filter(x, size=3, mode="nearest") == ndimage.minimum_filter(x, size=3, mode="nearest")
    labels |= _plateaus(x, valid, valid & ~top & flat & (x > lo + 0.5 * span), 1, LABEL_MIN_CONTRAST * span, box)
    if labels.any():
        labels = ndimage.binary_dilation(labels, structure=np.ones((3, 3), dtype=bool)) & valid
    return labels


def find_overlays(pixels: np.ndarray) -> Overlays:
    """Collimation borders, then burned-in labels inside the collimated field."""
    x = np.asarray(pixels, dtype=np.float64)
    collimation, bands = find_collimation(x)
    return Overlays(find_labels(x, ~collimation), collimation, bands)


def _where(mask: np.ndarray) -> str:
    """Where the groups of ``mask`` lie, e.g. ``"top-left, bottom-right"``."""
    from scipy import ndimage

    rows, cols = mask.shape
    groups, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    places = []
    for r, c in ndimage.center_of_mass(mask, groups, np.arange(1, count + 1)):
        vertical = "top" if r < rows / 3 else "bottom" if r > 2 * rows / 3 else "middle"
        horizontal = "left" if c < cols / 3 else "right" if c > 2 * cols / 3 else "centre"
        if f"{vertical}-{horizontal}" not in places:
            places.append(f"{vertical}-{horizontal}")
    return ", ".join(places)


def mask_overlays(xray: XRayImage) -> tuple[XRayImage, list[str]]:
    """``xray`` with labels and collimation filled and marked invalid; and warnings saying so.

    ``metadata["overlays"]`` records ``label_pixels``, ``collimation_pixels`` and the band
    widths. An image that already has ``overlays`` is returned unchanged.
    """
    from scipy import ndimage

    if xray.metadata.get("overlays") is not None:
        return xray, []
    found = find_overlays(xray.pixels)
    record = {"label_pixels": int(found.labels.sum()), "collimation_pixels": int(found.collimation.sum()),
              "bands": found.bands}
    metadata = {**xray.metadata, "overlays": record}
    if not found.any:
        return replace(xray, metadata=metadata), []
    invalid = found.labels | found.collimation
    valid = ~invalid if xray.valid_mask is None else (xray.valid_mask & ~invalid)
    if not valid.any():
        return replace(xray, metadata=metadata), ["the whole image looks like labels or collimation: nothing masked"]
    pixels = xray.pixels.astype(np.float64).copy()
    warnings = []
    if found.collimation.any():
        pixels[found.collimation] = np.percentile(pixels[valid], 0.5)
        sides = ", ".join(f"{k} {v}" for k, v in found.bands.items() if v)
        warnings.append(f"collimation border found ({sides} px): left out of the normalisation and shown to the "
                        "model as air")
    if found.labels.any():
        nearest = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        pixels[found.labels] = pixels[nearest[0], nearest[1]][found.labels]
        warnings.append(f"burned-in label found ({record['label_pixels']} px, {_where(found.labels)}): left out "
                        "of the normalisation and filled from its surroundings")
    return replace(xray, pixels=pixels.astype(np.float32), metadata=metadata, valid_mask=valid), warnings


__all__ = ["Overlays", "find_collimation", "find_labels", "find_overlays", "mask_overlays"]
