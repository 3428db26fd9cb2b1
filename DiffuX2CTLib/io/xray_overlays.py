"""Find burned-in labels and collimation borders in a film, and keep them out of the statistics.

Works on a line-integral estimate (bright = dense, see :mod:`~DiffuX2CTLib.io.xray_encoding`)
in pixels of the image as stored, for every encoding a film comes in: FOR PROCESSING linear
(``-ln`` of raw counts) or log data, FOR PRESENTATION data with a display curve, MONOCHROME1 or 2,
8-16 bits, at any detector size. Such films are noisy where few X-rays arrived: after ``-ln`` the
unexposed area of a raw film is half clamped values and half a long tail of noise, and dense
anatomy is speckled with clipped pixels. So nothing here relies on single pixels or on uniform
lines: decisions are taken on means of line segments and on groups of pixels.

**Collimation border** (a band along an image edge that no X-rays reached). Each line parallel to
an edge is cut into 16 segments, whose means leave out pixels at the image's minimum (dark
burned-in text); the line's *level* is the 25th percentile of its segment means: at least 75% of
the line is that dense (the means average the noise out, the percentile ignores labels and the
other sides' bands). The central 40% x 40% of the image, which a band never reaches, gives the
anatomy's reference: its range ``S`` (P99 - P1 of its segment means), its dense level ``D``
(their P90) and the noise ``sigma`` of a segment mean where it is densest (from line to line).
For each side, ``g`` = 3% of the side (room for the blade's penumbra):

* the band's *core*: the split ``w`` (up to 45% of the side) that best separates the outer lines
  (their lowest level, after a 3-line median) from lines ``w + g .. w + 2g`` (their highest). It
  is kept only if the outer lines (median level) are at least as dense as dense anatomy
  (``>= D - 0.05 S - 3 sigma``: an unexposed pixel reads the least signal of all, and in noisy
  films clipped noise lifts dense anatomy up to it), step down into the field by ``>= 0.15 S``,
  do so sharply (the level falls twice as much within ``g`` lines of the core as over the next
  ``g``: anatomy that fades away from an edge goes on falling), and are flat along their length
  (P90 - P10 of the core's segment means, averaged over its lines, less their noise, ``<= 0.8``
  times the step: a blade is straight, dense anatomy at a film's edge is not). The core is the
  lines above the midpoint between the band's and the field's levels (single dips allowed);
* the *penumbra* (the blade edge blurred by the focal spot and the detector) is added line by
  line, at most ``g`` lines, while the level is more than ``0.04 S`` above the lowest level
  within ``2g`` lines and falls by more than ``0.05 S`` per 1/128 of the side;
* a side without a core whose edge line is still lifted (a band thinner than a line) gets its
  penumbra masked, but only when another side has a band.

A band covers at most ``MAX_BAND_FRACTION`` (30%) of its side. A clean DRR has no such band: its
edges are air, or anatomy that is not flat, not as dense as the centre, or fades gradually.
Tilted blades are not detected. Dark (air-like) borders, e.g. electronic shutters, are left
alone: they already look like air to the model.

**Burned-in label**: a connected group (8-neighbours) of ``LABEL_MIN_PIXELS`` (4) or more pixels
exactly at the largest value of the exposed field, or at its smallest value when that is darker
than anything the beam made (the field's P0.5 without it is ``>= 10% R`` higher, ``R`` =
P99.5 - P0.5 of the field), or of a bright flat plateau (3 x 3 neighbourhood constant, above
mid-range) for other films. Burned-in text is stored as the value displayed white, which after
the encoding step is the image's maximum, or its minimum for MONOCHROME2 FOR PROCESSING data
(whose largest stored value means the most X-rays). The group must be small (<= 2% of the image,
box at most 25% of the rows and 40% of the columns), lie in the outer quarter of the exposed
field (labels sit near edges and corners), not be a line at most 2 pixels thick touching the
collimation (a saturated penumbra), and stand out from its surroundings (group mean less the
median of the valid non-candidate pixels within 2 pixels) by at least ``10% R`` (at an extreme
value) or ``25% R`` (a flat plateau, or the maximum when more than 0.2% of the middle of the
image is at it: clipped anatomy), and by 1.2 times more than any group in the middle of the
field when there are at least three such: labels are never there, so those groups show how far
noise specks of clipped anatomy stand out in this image. Specks of 1-3 pixels are never labels.
The mask is grown by one pixel for anti-aliased edges. A lead side marker blocks the beam (it
is anatomy-like, not burned in) and is only found where it reaches the extreme value (FOR
PRESENTATION films).

:func:`mask_overlays` fills labels from the nearest valid pixel and the collimated area with the
image's air level (P0.5 of the valid pixels; the model never saw a collimator), and sets
``valid_mask`` so that :class:`~DiffuX2CTLib.io.xray.XRayNormalization` leaves both out. It takes
about 5 ms for a 128 x 128 film and 50-150 ms for 1024 x 1024 (the most for noisy films with
many clipped specks).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .xray import XRayImage

#: A collimation band covers at most this fraction of its side ...
MAX_BAND_FRACTION = 0.3
#: ... and is looked for up to this fraction (a wider one is cut to MAX_BAND_FRACTION).
BAND_SEARCH_FRACTION = 0.45
#: Segments per line; a line's level is the LINE_QUANTILE-th percentile of its segment means.
SEGMENTS = 16
LINE_QUANTILE = 25.0
#: The anatomy reference: the image without this fraction on each side.
CENTRE_CUT = 0.3
#: A band is at least as dense as the anatomy's DENSE_PERCENTILE-th percentile less
#: DENSE_TOLERANCE of its range and DENSE_NOISE times its noise ...
DENSE_PERCENTILE = 90.0
DENSE_TOLERANCE = 0.05
DENSE_NOISE = 3.0
#: ... steps down into the field by at least this fraction of the anatomy's range ...
MIN_STEP = 0.15
#: ... falls this many times more within the penumbra's reach than over as many lines beyond ...
EDGE_SHARPNESS = 2.0
#: ... and its segment means spread (P90 - P10, less noise) over at most this fraction of the step.
MAX_BAND_SPREAD = 0.8
#: The penumbra is looked for within this fraction of the side beyond the band's core; it ends
#: where the line level is within PENUMBRA_EXCESS of the anatomy's range of the field's level
#: or falls by less than PENUMBRA_DROP of it per 1/PENUMBRA_DROP_LINES of the side.
PENUMBRA_FRACTION = 0.03
PENUMBRA_EXCESS = 0.04
PENUMBRA_DROP = 0.05
PENUMBRA_DROP_LINES = 128
#: Burned-in labels: size limits (fractions of the image, its rows and columns; pixels) ...
LABEL_MAX_AREA = 0.02
LABEL_MAX_HEIGHT = 0.25
LABEL_MAX_WIDTH = 0.4
LABEL_MIN_PIXELS = 4
#: ... where they are (the outer fraction of the exposed field) ...
LABEL_BORDER_ZONE = 0.25
#: ... and how far they stand out from their surroundings (within LABEL_RING pixels), as
#: fractions of the field's range: LABEL_MIN_CONTRAST_EXTREME for a group at the field's extreme
#: value, LABEL_MIN_CONTRAST for a flat plateau or for the maximum when more than
#: LABEL_CLIPPED_FRACTION of the image's middle is at it (anatomy clipped by a display curve).
LABEL_MIN_CONTRAST = 0.25
LABEL_MIN_CONTRAST_EXTREME = 0.1
LABEL_CLIPPED_FRACTION = 0.002
LABEL_RING = 2
#: With at least LABEL_NULL_GROUPS groups in the middle of the field, a label stands out
#: LABEL_NULL_MARGIN times more than the most prominent of them.
LABEL_NULL_GROUPS = 3
LABEL_NULL_MARGIN = 1.2
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


def _segment_means(lines: np.ndarray, segments: int = SEGMENTS, floor: float = -np.inf) -> np.ndarray:
    """``(n, k)`` means of ``k = min(segments, m)`` equal segments of each of ``n`` lines of length
    ``m`` (centred; a remainder of fewer than ``k`` pixels left out), leaving out pixels at or
    below ``floor`` (dark burned-in text); ``floor`` for a segment that holds nothing else."""
    n, m = lines.shape
    k = max(1, min(segments, m))
    length = m // k
    start = (m - k * length) // 2
    part = lines[:, start:start + k * length].reshape(n, k, length)
    if not np.isfinite(floor):
        return part.mean(axis=2)
    keep = part > floor
    counts = keep.sum(axis=2)
    sums = np.where(keep, part, 0.0).sum(axis=2)
    return np.where(counts > 0, sums / np.maximum(counts, 1), floor)


def _line_levels(lines: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """``(levels, segments)``: each line's segment means and its level, the 25th percentile of them
    (75% of the line at least as dense)."""
    if lines.shape[1] == 0:
        return np.full(lines.shape[0], -np.inf), np.full((lines.shape[0], 1), -np.inf)
    segments = _segment_means(lines, floor=floor)
    return np.percentile(segments, LINE_QUANTILE, axis=1), segments


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
    if core == 0:
        return 0, float("nan")
    # a blade's edge is sharp: the level falls within the penumbra's reach and then stops falling;
    # anatomy that fades away from the edge goes on falling
    edge, beyond, further = (smooth[min(i, q.size - 1)] for i in (core - 1, core + g, core + 2 * g))
    if edge - beyond < EDGE_SHARPNESS * max(beyond - further, 0.0):
        return 0, float("nan")
    # unexposed lines are flat along their length, up to noise (estimated from line to line);
    # dense anatomy (an abdomen at the film's edge) is not
    band = segments[:core]
    low, high = np.percentile(band.mean(axis=0), [10, 90])
    noise = 0.0
    if core > 1:
        noise = 1.4826 / np.sqrt(2.0 * core) * float(np.median(np.abs(np.diff(band, axis=0))))
    if high - low - 2.56 * noise > MAX_BAND_SPREAD * (level - inside):
        return 0, float("nan")
    return core, level


def _penumbra(q: np.ndarray, start: int, limit: int, g: int, scale: float, length: int) -> int:
    """Lines from ``start`` on (at most ``g``) that still fall steeply towards the field's level,
    the lowest line level within ``2 g`` lines of ``start``."""
    floor = float(q[start:start + 2 * g].min())
    drop = PENUMBRA_DROP * scale * min(1.0, PENUMBRA_DROP_LINES / length)
    n = 0
    while n < g and start + n < limit:
        r = start + n
        if q[r] - floor <= PENUMBRA_EXCESS * scale or (r > 0 and q[r - 1] - q[r] <= drop):
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
    floor = float(x.min())  # burned-in text stored as the most X-rays (MONOCHROME2 raw data)
    along_rows = _segment_means(centre, max(1, centre.shape[1] * SEGMENTS // cols), floor)
    along_cols = _segment_means(centre.T, max(1, centre.shape[0] * SEGMENTS // rows), floor)
    pieces = np.concatenate([along_rows.ravel(), along_cols.ravel()])
    low, dense, high = np.percentile(pieces, [1, DENSE_PERCENTILE, 99])
    scale = high - low
    if not scale > 0:  # a flat centre: fall back to a small part of the image's range
        lo, hi = np.percentile(x, [0.5, 99.5])
        scale = 1e-3 * (hi - lo)
        if not scale > 0:
            return mask, bands
    # the noise of a segment mean where the anatomy is densest (robust, from neighbouring lines):
    # there a noisy film's P99 is lifted by its noise, towards (or beyond) the unexposed level
    noise = 0.0
    if len(along_rows) > 1:
        pairs = 0.5 * (along_rows[1:] + along_rows[:-1])
        densest = pairs >= np.percentile(pairs, 90)
        noise = 1.4826 / np.sqrt(2.0) * float(np.median(np.abs(np.diff(along_rows, axis=0))[densest]))
    dense -= DENSE_TOLERANCE * scale + DENSE_NOISE * noise
    length = {"top": rows, "bottom": rows, "left": cols, "right": cols}
    limits = {s: int(MAX_BAND_FRACTION * length[s]) for s in SIDES}
    search = {s: int(BAND_SEARCH_FRACTION * length[s]) for s in SIDES}  # wider bands are capped
    reach = {s: max(2, int(round(PENUMBRA_FRACTION * length[s]))) for s in SIDES}
    widths = dict(bands)
    for _ in range(2):  # a band on one side raises the levels of the other sides' lines
        t, b, l, r = (widths[s] for s in SIDES)
        views = {"top": x[:, l:cols - r], "bottom": x[::-1, l:cols - r],
                 "left": x[t:rows - b, :].T, "right": x[t:rows - b, ::-1].T}
        profiles = {s: _line_levels(views[s][:min(search[s] + 2 * reach[s] + 1, length[s])], floor)
                    for s in SIDES}
        levels = {s: profiles[s][0] for s in SIDES}
        cores = {s: _core(*profiles[s], search[s], reach[s], dense, scale) for s in SIDES}
        found = [level for width, level in cores.values() if width > 0]
        if not found:  # nothing (first pass), or nothing more once the other bands are known
            break
        unexposed = max(found)
        new = {}
        for s in SIDES:
            q, (core, _), g = levels[s], cores[s], reach[s]
            if core == 0:  # a thin band (less than a line unexposed): only its penumbra shows
                edge = float(q[:2 * g].min())
                if q[0] - edge < max(2 * PENUMBRA_EXCESS * scale, 0.03 * (unexposed - edge)):
                    new[s] = 0
                    continue
            new[s] = min(core + _penumbra(q, core, limits[s], g, scale, length[s]), limits[s])
        widths = new
    mask[:widths["top"]] = True
    mask[rows - widths["bottom"]:] = True
    mask[:, :widths["left"]] = True
    mask[:, cols - widths["right"]:] = True
    return mask, widths


def _group_percentiles(values: np.ndarray, groups: np.ndarray, count: int, qs: tuple[float, ...]) -> np.ndarray:
    """``(len(qs), count + 1)``: the ``qs`` percentiles (nearest rank) of ``values`` for each group id
    ``0 .. count`` in ``groups`` (same length); NaN for a group without values."""
    span = float(values.max() - values.min()) if values.size else 0.0
    key = groups + (0.5 * (values - values.min()) / span if span > 0 else 0.0)
    vals = values[np.argsort(key, kind="stable")]
    sizes = np.bincount(groups, minlength=count + 1)
    starts = np.cumsum(sizes) - sizes
    result = np.full((len(qs), count + 1), np.nan)
    has = sizes > 0
    for i, q in enumerate(qs):
        result[i, has] = vals[starts[has] + np.round(q / 100.0 * (sizes[has] - 1)).astype(np.int64)]
    return result


def _plateaus(x: np.ndarray, valid: np.ndarray, candidates: np.ndarray, sign: int, contrast: float,
              field_box: tuple[int, int, int, int], rim: np.ndarray) -> np.ndarray:
    """The groups of ``candidates`` that look like burned-in labels; ``sign`` +1 for labels brighter
    than their surroundings, -1 for darker ones (see the module docstring). Thin groups (at most 2
    pixels across) touching ``rim``, the valid pixels next to the collimation, are not labels: they
    are a saturated penumbra."""
    from scipy import ndimage

    rows, cols = x.shape
    top, bottom, left, right = field_box
    nothing = np.zeros(x.shape, dtype=bool)
    components, count = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return nothing
    # the groups of a plausible size (noise specks of 1-3 pixels go first), renumbered 1..n
    where = np.flatnonzero(components)
    label = components.ravel()[where]
    area = np.bincount(label, minlength=count + 1)
    big = (area >= LABEL_MIN_PIXELS) & (area <= LABEL_MAX_AREA * x.size)
    big[0] = False
    n = int(big.sum())
    if n == 0:
        return nothing
    renumber = np.zeros(count + 1, dtype=np.int64)
    renumber[big] = np.arange(1, n + 1)
    keep_pixel = big[label]
    where, group = where[keep_pixel], renumber[label[keep_pixel]]
    order = np.argsort(group, kind="stable")
    where, group = where[order], group[order]
    starts = np.searchsorted(group, np.arange(1, n + 1))
    r, c = np.divmod(where, cols)
    r0, r1 = np.minimum.reduceat(r, starts), np.maximum.reduceat(r, starts)
    c0, c1 = np.minimum.reduceat(c, starts), np.maximum.reduceat(c, starts)
    values = sign * np.asarray(x, dtype=np.float64).ravel()
    level = np.add.reduceat(values[where], starts) / area[big]
    sized = (r1 - r0 + 1 <= max(1, LABEL_MAX_HEIGHT * rows)) & (c1 - c0 + 1 <= max(1, LABEL_MAX_WIDTH * cols))
    thin = np.minimum(r1 - r0, c1 - c0) < 2  # a line along the rim: a saturated penumbra
    sized &= ~(thin & (np.bincount(group[rim.ravel()[where]], minlength=n + 1)[1:] > 0))
    rc, cc = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    near_edge = ((np.minimum(rc - top, bottom - rc) <= LABEL_BORDER_ZONE * (bottom - top + 1))
                 | (np.minimum(cc - left, right - cc) <= LABEL_BORDER_ZONE * (right - left + 1)))
    # each group's surroundings: the valid non-candidate pixels within LABEL_RING pixels of it
    groups = np.zeros(x.size, dtype=np.uint16 if n < 65535 else np.int32)
    groups[where] = group
    groups = groups.reshape(x.shape)
    grown = ndimage.maximum_filter(groups, size=2 * LABEL_RING + 1, mode="constant")
    ring = np.flatnonzero((grown > 0) & valid & ~candidates)
    background = _group_percentiles(values[ring], grown.ravel()[ring].astype(np.int64), n, (50.0,))[0, 1:]
    stand_out = np.where(sized & np.isfinite(background), level - background, -np.inf)
    # groups in the middle of the field are not labels: if there are several, they show how far
    # clipped anatomy (noise specks at the extreme value) can stand out in this image
    inner = stand_out[~near_edge & np.isfinite(stand_out)]
    threshold = contrast
    if inner.size >= LABEL_NULL_GROUPS:
        threshold = max(contrast, LABEL_NULL_MARGIN * float(inner.max()))
    keep = np.concatenate([[False], near_edge & (stand_out >= threshold)])
    return keep[groups]


def _flat(x: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood (edges repeated) holds one value."""
    padded = np.pad(x, 1, mode="edge")
    rows, cols = x.shape
    flat = np.ones(x.shape, dtype=bool)
    for dr in range(3):
        for dc in range(3):
            if dr != 1 or dc != 1:
                flat &= padded[dr:dr + rows, dc:dc + cols] == x
    return flat


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
    rim = valid & ~ndimage.binary_erosion(valid, structure=np.ones((3, 3), dtype=bool), border_value=1)
    highest, lowest = valid & (x >= inside.max()), valid & (x <= inside.min())
    # text at the value that clipped anatomy also reaches (display-processed films) must stand out more
    rows, cols = x.shape
    middle = highest[rows // 4:rows - rows // 4, cols // 4:cols - cols // 4]
    clipped = middle.mean() > LABEL_CLIPPED_FRACTION
    labels = _plateaus(x, valid, highest, 1, (LABEL_MIN_CONTRAST if clipped else LABEL_MIN_CONTRAST_EXTREME) * span,
                       box, rim)
    # dark text (MONOCHROME2 raw data: more X-rays than the open field) is darker than anything
    # the beam made; a plateau at the air level (a clean DRR's air, clipped air) is not text
    others = x[valid & ~lowest]
    if others.size and np.percentile(others, 0.5) - inside.min() >= LABEL_MIN_CONTRAST_EXTREME * span:
        labels |= _plateaus(x, valid, lowest, -1, LABEL_MIN_CONTRAST_EXTREME * span, box, rim)
    bright = valid & ~highest & (x > lo + 0.5 * span)
    if bright.any():
        labels |= _plateaus(x, valid, bright & _flat(x), 1, LABEL_MIN_CONTRAST * span, box, rim)
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
    groups, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    places = []
    for box in ndimage.find_objects(groups):
        r, c = ((s.start + s.stop - 1) / 2 for s in box)
        vertical = "top" if r < rows / 3 else "bottom" if r > 2 * rows / 3 else "middle"
        horizontal = "left" if c < cols / 3 else "right" if c > 2 * cols / 3 else "centre"
        if f"{vertical}-{horizontal}" not in places:
            places.append(f"{vertical}-{horizontal}")
    return ", ".join(places)


def _fill_from_nearest(pixels: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> None:
    """Set each ``labels`` pixel of ``pixels`` (in place) to the value of its nearest ``valid`` pixel,
    group by group in a window around each group (the whole image when a window has no valid pixel)."""
    from scipy import ndimage

    groups, _ = ndimage.label(labels, structure=np.ones((3, 3), dtype=bool))
    for i, box in enumerate(ndimage.find_objects(groups), start=1):
        if box is None:
            continue
        margin = min(s.stop - s.start for s in box) // 2 + 2
        window = tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, pixels.shape))
        if not valid[window].any():
            window = (slice(None), slice(None))
        nearest = ndimage.distance_transform_edt(~valid[window], return_distances=False, return_indices=True)
        own = groups[window] == i
        local = pixels[window]
        local[own] = local[nearest[0][own], nearest[1][own]]


def mask_overlays(xray: XRayImage) -> tuple[XRayImage, list[str]]:
    """``xray`` with labels and collimation filled and marked invalid; and warnings saying so.

    ``metadata["overlays"]`` records ``label_pixels``, ``collimation_pixels`` and the band
    widths. An image that already has ``overlays`` is returned unchanged.
    """
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
        _fill_from_nearest(pixels, found.labels, valid)
        warnings.append(f"burned-in label found ({record['label_pixels']} px, {_where(found.labels)}): left out "
                        "of the normalisation and filled from its surroundings")
    return replace(xray, pixels=pixels.astype(np.float32), metadata=metadata, valid_mask=valid), warnings


__all__ = ["Overlays", "find_collimation", "find_labels", "find_overlays", "mask_overlays"]
