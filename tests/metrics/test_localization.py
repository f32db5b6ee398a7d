"""Localisation metrics against analytic cases: patch centres in a box, energy share, pointing game, upsampling."""
from __future__ import annotations

import math

import torch

from medinterp.metrics.localization import energy_in_box, patches_in_box, pointing_hit, upsample


def test_patch_centres_inside_a_box():
    # 4 x 4 grid on a 40 x 80 (width x height) image: centres at x = 5, 15, 25, 35 and y = 10, 30, 50, 70
    inside = patches_in_box(4, 4, (10, 20, 30, 60), 40, 80)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(inside, expected)
    assert not patches_in_box(4, 4, (0, 0, 5, 10), 40, 80).any()  # x1, y1 are exclusive: the first centre is out


def test_energy_and_pointing():
    pixels = torch.zeros(10, 20)
    pixels[2, 3] = 3.0
    pixels[8, 15] = 1.0
    assert energy_in_box(pixels, (0, 0, 10, 5)) == 0.75
    assert pointing_hit(pixels, (0, 0, 10, 5)) == 1.0 and pointing_hit(pixels, (10, 5, 20, 10)) == 0.0
    assert math.isnan(energy_in_box(torch.zeros(4, 4), (0, 0, 2, 2)))
    assert math.isnan(pointing_hit(torch.zeros(4, 4), (0, 0, 2, 2)))


def test_upsampling_keeps_a_uniform_map_and_the_peak_cell():
    torch.testing.assert_close(upsample(torch.full((3, 3), 2.0), 30, 12), torch.full((12, 30), 2.0))
    grid = torch.zeros(4, 4)
    grid[1, 2] = 1.0
    up = upsample(grid, 64, 64)
    r, c = divmod(int(up.argmax()), 64)
    assert (r // 16, c // 16) == (1, 2)
    assert float(upsample(-grid, 8, 8).min()) == 0.0  # clamped at 0
