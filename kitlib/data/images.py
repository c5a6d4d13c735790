"""Opening image files the kit's way: sizes as displayed, large slides allowed up to a stated cap, clear errors.

    with open_image(path) as im:       # EXIF orientation not yet applied: decode with upright(im)
        width, height = oriented_size(im)

Every failure a user can cause (a missing, truncated or foreign file; an image over the cap) is a
KitError naming the file, never Pillow's traceback.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from PIL import Image, ImageOps

from kitlib.errors import KitError
from kitlib.files import file_kind

MAX_PIXELS = 2**28
"""The largest image (width x height) the kit decodes: 268 megapixels, e.g. a 16,384 x 16,384 slide
(768 MiB as RGB). Pillow's own limit (89 MP) refuses ordinary slides as "decompression bombs"; the
kit's decoding replaces it with this one, stated in the error."""
ORIENTATION = 0x0112  # the EXIF tag; values 5-8 swap width and height
# what turns a stored image upright, per EXIF orientation (as ImageOps.exif_transpose does)
_TURN = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_90}


def open_image(path: str | Path) -> Image.Image:
    """The image at `path`, opened lazily (use it in a `with`); KitError for a missing, foreign or too large file."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the kit's cap below replaces Pillow's bomb check
    try:
        im = Image.open(path)
    except FileNotFoundError as error:
        raise KitError(f"{path}: the file is missing. Restore it, or delete its row from the labels CSV.") from error
    except OSError as error:  # UnidentifiedImageError and unreadable files
        kind = file_kind(path)  # what the file seems to be: an HTML page, text, an image cut off ...
        what = f"{kind} that Pillow cannot read: cut off or damaged" if kind.endswith(" image") else \
            f"{kind}, not an image" if kind != "binary data" else f"not an image file Pillow can read ({error})"
        raise KitError(f"{path}: {what}. Replace or delete it.") from error
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise KitError(f"{path}: {width} x {height} px is over the kit's limit of {MAX_PIXELS:,} px "
                       f"(kitlib.data.images.MAX_PIXELS). Shrink the image, or raise the limit if memory allows.")
    return im


def orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 (upright) when it has none.

    For a PNG whose EXIF does not precede its pixels, Pillow's getexif() decodes the whole image to look
    for it (~25 ms for a 1,500 px slide); the kit skips from chunk to chunk instead (png_exif)."""
    try:
        # (EXIF in ImageMagick's text profile: Pillow's own way)
        if im.format == "PNG" and not {"exif", "Raw profile type exif"} & set(im.info) and getattr(im, "filename", ""):
            data = png_exif(im.filename)
            if data is None:
                return 1
            exif = Image.Exif()
            exif.load(b"Exif\x00\x00" + data)
            return int(exif.get(ORIENTATION, 1))
        return int(im.getexif().get(ORIENTATION, 1))
    except (OSError, ValueError, SyntaxError, struct.error):  # a broken EXIF block or file: treat as upright
        return 1


def png_exif(path: str | Path) -> bytes | None:
    """The data of a PNG file's eXIf chunk, wherever it lies (libpng writes it before or after the pixels), or
    None: read by skipping from chunk header to chunk header (8 bytes each), no pixel decoded."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                return f.read(length)
            if kind == b"IEND":
                return None
            f.seek(length + 4, os.SEEK_CUR)  # the chunk's data and its CRC


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as the image is displayed: after its EXIF orientation (read from the header alone)."""
    w, h = im.size
    return (h, w) if orientation(im) in (5, 6, 7, 8) else (w, h)


def upright(im: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (the same image when it says nothing)."""
    return ImageOps.exif_transpose(im) if orientation(im) != 1 else im


def upright_like(mask: Image.Image, image: Image.Image) -> Image.Image:
    """A mask turned to lie on its image as displayed.

    A mask with its own EXIF orientation follows it. A mask without one is taken as drawn on what
    the image shows, unless it has the image's stored (unturned) size while the image is displayed
    turned: then it was drawn on the stored pixels and turns with the image. (When the turn keeps
    the size, 180 degrees, a mirror or a square image, the two look alike: the mask is taken as
    drawn on what the image shows.)
    """
    turn = orientation(image)
    if orientation(mask) != 1 or turn == 1 or mask.size != image.size or oriented_size(image) == image.size:
        return upright(mask)
    return mask.transpose(_TURN[turn]) if turn in _TURN else mask


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the file as displayed, read from its header."""
    with open_image(path) as im:
        return oriented_size(im)
