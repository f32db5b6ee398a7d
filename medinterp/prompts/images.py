"""The image files of image prompt sets: decode checks, boxes, hashes and loading.

Images are read with Pillow. :func:`check_image` checks the file's structure and checksums
(``Image.verify``: a PNG whose data were cut or changed fails although its pixels may still decode) and
decodes every pixel once (``Image.load``: truncated pixel data fail), so a damaged file fails when the
prompt set is loaded, not in the middle of a run; it returns the size the box is checked against. Boxes are pixel rectangles ``(x0, y0, x1, y1)`` with the origin at the image's
top-left corner, covering columns [x0, x1) and rows [y0, y1): valid when 0 <= x0 < x1 <= width and
0 <= y0 < y1 <= height.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from medinterp.validation import is_number


def check_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Decode the whole image at ``path`` and return its ``(width, height)`` in pixels.

    Raises ``ValueError`` with a short reason ("file not found", "not an image Pillow can read: ...",
    "corrupt image: ...") that the prompt-set loader puts after the item's name.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.verify()  # chunk structure and checksums; leaves the image unusable, hence the second open
        with Image.open(path) as image:
            image.load()  # decodes every pixel: truncated pixel data raise here
            return image.size
    except UnidentifiedImageError:
        raise ValueError(f"not an image Pillow can read: {path}") from None
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's decoders raise these for damaged data
        raise ValueError(f"corrupt image {path}: {' '.join(str(err).split())}") from None


def check_box(box: object, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Validate a box ``[x0, y0, x1, y1]`` against an image of ``size = (width, height)``; return it as a tuple.

    ``ValueError`` names the problem: not four finite numbers, inverted or empty (x0 >= x1 or y0 >= y1), or
    outside the image.
    """
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(is_number(v) and math.isfinite(v) for v in box):
        raise ValueError(f"box must be four finite numbers [x0, y0, x1, y1] in pixels, got {box!r}")
    x0, y0, x1, y1 = box
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"box {list(box)} is inverted or empty: needs x0 < x1 and y0 < y1")
    width, height = size
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"box {list(box)} lies outside the {width}x{height} image: needs 0 <= x0 < x1 <= {width} "
                         f"and 0 <= y0 < y1 <= {height}")
    return (x0, y0, x1, y1)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """The image at ``path`` as a fully loaded RGB Pillow image (what VLM processors take; grey becomes R=G=B)."""
    with Image.open(path) as image:
        return image.convert("RGB")
