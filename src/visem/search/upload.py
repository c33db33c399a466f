"""Decoding a query image safely: the pixel count checked before any pixel is decoded.

An image file states its size in its header; PIL reads the header on
``Image.open`` and decodes only on ``load``. A query image larger than
:data:`MAX_QUERY_PIXELS` is refused from its header (an 8000 x 8000 upload
used to take 17 s of decoding and resizing before anything could refuse
it). A JPEG is decoded at the smallest DCT scale (1/2, 1/4 or 1/8) that
still covers the encoder's input (``Image.draft``), which costs a fraction
of a full decode; the encoder resizes to its own input size anyway.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from visem.search.types import QueryError

__all__ = ["MAX_QUERY_PIXELS", "open_query_image"]

#: largest query image, in pixels (width x height): 50 megapixels
MAX_QUERY_PIXELS = 50_000_000


def open_query_image(image: Any, max_pixels: int = MAX_QUERY_PIXELS, target: int = 260):
    """A decoded RGB(A) PIL image from a path, the bytes of an image file, or a PIL image.

    :class:`QueryError` for anything else, for a file that does not decode,
    and for an image over ``max_pixels`` (checked before decoding).
    ``target``: the encoder's input side (a JPEG is decoded at the smallest
    scale still at least this large).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray)):
        source, name = io.BytesIO(image), "the uploaded file"
    elif isinstance(image, (str, Path)):
        source, name = image, str(image)
    else:
        raise QueryError(f"an image query must be a path, bytes or a PIL image, not {type(image).__name__}")
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise QueryError(f"{name}: {w} x {h} pixels, more than the {max_pixels:,} a query image may have")
            if im.format == "JPEG":
                im.draft("RGB", (target, target))
            im.load()
            return im.copy()
    except QueryError:
        raise
    except FileNotFoundError:
        raise QueryError(f"{name}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise QueryError(f"{name}: not a readable image ({type(exc).__name__})") from None
