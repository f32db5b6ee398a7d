"""Localisation of a per-patch map against an item's box (image_lens, gradcam; docs/multimodal.md).

A box is ``(x0, y0, x1, y1)`` in the image's own pixels, covering columns [x0, x1) and rows [y0, y1)
(docs/multimodal-data.md). The processor maps the whole image onto the token grid (Gemma 3 resizes; LLaVA
resizes and centre-crops, which for a square image is the same), so patch ``(r, c)`` of a ``rows x cols``
grid covers the normalised square [c / cols, (c + 1) / cols) x [r / rows, (r + 1) / rows) of the image. For a
non-square image under a centre crop or a pad-to-square the mapping is approximate.

- :func:`patches_in_box` (rows, cols) bool: the patches whose centre lies inside the box;
- :func:`upsample` a (rows, cols) map onto (H, W) pixels (bilinear, ``align_corners=False``, as Grad-CAM's
  ``cv2.resize``), clamped at 0;
- :func:`energy_in_box` the share of a non-negative map's mass inside the box, in [0, 1] (the "energy-based
  pointing game", Wang et al. 2020, Score-CAM); NaN for an all-zero map;
- :func:`pointing_hit` whether the map's maximum falls inside the box (Zhang et al. 2018, the pointing
  game); NaN for an all-zero map (no maximum to point with).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

Box = Sequence[float]


def patches_in_box(rows: int, cols: int, box: Box, width: int, height: int) -> torch.Tensor:
    """(rows, cols) bool: patch centres ((c + 0.5) / cols * width, (r + 0.5) / rows * height) inside the box."""
    x0, y0, x1, y1 = box
    x = (torch.arange(cols, dtype=torch.float64) + 0.5) / cols * width  # (cols,)
    y = (torch.arange(rows, dtype=torch.float64) + 0.5) / rows * height  # (rows,)
    return ((y >= y0) & (y < y1))[:, None] & ((x >= x0) & (x < x1))[None, :]


def upsample(grid_map: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(rows, cols) -> (height, width) float32, bilinear, negative values clamped to 0."""
    up = F.interpolate(grid_map.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return up[0, 0].clamp(min=0)


def _box_mask(height: int, width: int, box: Box) -> torch.Tensor:
    x0, y0, x1, y1 = (int(math.floor(v)) if i < 2 else int(math.ceil(v)) for i, v in enumerate(box))
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[max(y0, 0):y1, max(x0, 0):x1] = True
    return mask


def energy_in_box(pixel_map: torch.Tensor, box: Box) -> float:
    """Share of the non-negative (H, W) map's sum inside the box; NaN when the map sums to 0."""
    total = float(pixel_map.sum())
    if not total > 0:
        return math.nan
    return float(pixel_map[_box_mask(*pixel_map.shape, box)].sum()) / total


def pointing_hit(pixel_map: torch.Tensor, box: Box) -> float:
    """1.0 when the (H, W) map's maximum (the first, in row-major order) lies inside the box, else 0.0; NaN when
    the map is all zero."""
    if not float(pixel_map.max()) > 0:
        return math.nan
    r, c = divmod(int(pixel_map.argmax()), pixel_map.shape[1])
    return float(_box_mask(*pixel_map.shape, box)[r, c])
