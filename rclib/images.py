"""Reading images: any file PIL opens becomes the RGB picture a viewer would show, or a clear error.

Rules, in order (each step that changes the picture adds a note to :class:`ImageRead`):

1. The pixel count is checked from the header, before decoding: above ``max_pixels`` the image is
   refused (a decompression bomb, or a photo far larger than the 336 px the vision tower reads).
2. Animated images (GIF, APNG, WebP, multi-page TIFF) use their first frame.
3. The EXIF orientation tag is applied (phone photos are stored sideways and tagged).
4. More than 8 bits per channel (PIL modes ``I;16*``, ``I``, ``F``) is scaled to 8 bits: integers
   from 0..65535, floats from 0..1, both clipped. PIL's own conversion would clip instead of scale
   and turn a 16-bit greyscale picture almost all white.
5. An embedded ICC colour profile (Display P3 phone photos, print CMYK) is converted to sRGB.
6. Transparency (an alpha band, or a palette / greyscale transparency key) is composited on
   ``BACKGROUND``, white, as transformers' image processors do.
7. Everything else (palette, 1-bit, greyscale, CMYK, YCbCr, LAB, HSV) goes through PIL's conversion.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

MAX_PIXELS = 100_000_000  # 100 megapixels: more than phone cameras take, a tenth of a typical bomb
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on (transformers' convert_to_rgb uses white)
COLOUR_MODE = {"LA": "L", "PA": "RGB", "P": "RGB", "RGBA": "RGB", "RGBa": "RGB"}  # what an ICC transform reads
HIGH_DEPTH_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}  # full scale


@dataclass
class ImageRead:
    """An image file read as RGB, and what was done to it beyond decoding."""

    image: Image.Image  # mode "RGB"
    notes: list[str] = field(default_factory=list)  # e.g. "animated (12 frames): the first frame is used"


class ImageError(ValueError):
    """An image rclib refuses (too many pixels, a mode without RGB conversion), with what to do."""


class ImageNote(UserWarning):
    """Something :func:`read_image` did to a picture beyond decoding it (first frame, alpha, 16 bits...)."""


def check_pixel_count(size: tuple[int, int], max_pixels: int, source: str) -> None:
    """Refuse an image of ``size`` (width, height) above ``max_pixels``, before it is decoded."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(f"image {source} is {width} x {height} = {width * height:,} pixels, over the limit of "
                         f"{max_pixels:,}: downscale it (the model reads it at a few hundred pixels a side) or pass "
                         "a larger max_pixels to rclib.images.open_image")
    if width * height == 0:
        raise ImageError(f"image {source} is {width} x {height}: it has no pixels")


def to_8_bits(image: Image.Image) -> Image.Image:
    """A single-band image of more than 8 bits (``I;16*``, ``I``, ``F``) scaled to mode "L"."""
    full_scale = HIGH_DEPTH_SCALE[image.mode]
    values = np.asarray(image, dtype=np.float64) / full_scale  # [H, W] in 0..1 when in range
    return Image.fromarray(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8), mode="L")


def to_srgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Colours through the embedded ICC profile into sRGB (mode RGB, or RGBA keeping the alpha band)."""
    profile = image.info.get("icc_profile")
    if not profile:
        return image
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    colour = image.convert(COLOUR_MODE.get(image.mode, image.mode))  # without alpha or palette
    try:
        converted = ImageCms.profileToProfile(colour, io.BytesIO(profile), ImageCms.createProfile("sRGB"),
                                              outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        notes.append(f"its embedded colour profile could not be read ({error}): colours taken as they are")
        return image
    notes.append("converted from its embedded colour profile to sRGB")
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> ImageRead:
    """Steps 3-7 of the module rules on an opened PIL image (any mode) -> an RGB image and notes."""
    notes = []
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation != 1:
        notes.append(f"turned upright by its EXIF orientation tag ({orientation})")
        image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_DEPTH_SCALE:
        notes.append(f"{image.mode} pixels scaled to 8 bits from 0..{HIGH_DEPTH_SCALE[image.mode]}")
        image = to_8_bits(image)
    if "transparency" in image.info:  # a palette entry or colour key: make it an alpha band
        image = image.convert("RGBA")
    image = to_srgb(image, notes)
    if {"A", "a"} & set(image.getbands()):
        notes.append(f"transparency composited on RGB {background}")
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba)
    try:
        return ImageRead(image.convert("RGB"), notes)
    except ValueError as error:  # modes PIL cannot convert, e.g. "La"
        raise ImageError(f"cannot convert a PIL image of mode {image.mode!r} to RGB ({error}); convert it to "
                         "RGB or RGBA first") from error


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS, background: tuple[int, int, int] = BACKGROUND
               ) -> ImageRead:
    """Read an image file as RGB following the module rules; a ValueError names the file and the problem."""
    source = repr(str(path))
    try:
        with warnings.catch_warnings():  # rclib's own pixel limit speaks instead of PIL's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                check_pixel_count(opened.size, max_pixels, source)
                frames = getattr(opened, "n_frames", 1)
                opened.seek(0)
                opened.load()
                read = to_rgb(opened, background)
    except Image.DecompressionBombError as error:
        raise ValueError(f"image {source} is too large to decode safely ({error}); downscale it") from error
    except UnidentifiedImageError as error:
        raise ValueError(f"cannot read image file {source}: not an image format PIL knows, or a damaged file")\
            from error
    except OSError as error:  # FileNotFoundError, IsADirectoryError, PermissionError, truncated files
        raise ValueError(f"cannot read image file {source}: {error.strerror or error}") from error
    except ImageError:
        raise
    except Exception as error:  # PIL's decoders raise many types on damaged files (SyntaxError, TypeError...)
        raise ValueError(f"cannot read image file {source}, a damaged file: {type(error).__name__}: {error}") \
            from error
    if frames > 1:
        read.notes.insert(0, f"animated ({frames} frames): the first frame is used")
    return read


def read_image(image):
    """A path becomes an RGB PIL image by :func:`open_image` (its notes are issued as :class:`ImageNote`
    warnings); a PIL image goes through :func:`to_rgb`; arrays and tensors pass unchanged."""
    if isinstance(image, (str, Path)):
        read = open_image(image)
    elif isinstance(image, Image.Image):
        read = to_rgb(image)
    else:
        return image
    for note in read.notes:
        warnings.warn(f"{image if isinstance(image, (str, Path)) else 'image'}: {note}", ImageNote, stacklevel=2)
    return read.image
