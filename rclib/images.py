"""Reading images: any file PIL opens becomes the RGB picture a viewer would show, or a clear error.

Rules, in order (each step that changes the picture adds a note to :class:`ImageRead`):

0. A file is read once: a pipe (``<(cat x.jpg)``, ``/dev/stdin``) is read into memory, up to ``MAX_STREAM_BYTES``,
   waiting at most ``PIPE_WAIT`` seconds for its first byte (a FIFO nobody writes to fails, never hangs).
1. The size is checked from the header, before decoding: above ``max_pixels``, a side over ``MAX_SIDE`` or
   an aspect ratio over ``MAX_ASPECT`` the image is refused (a decompression bomb, or a picture whose
   padding to a square or resizing to the 336 px the vision tower reads would take gigabytes).
2. Animated images (GIF, APNG, WebP, multi-page TIFF) use their first frame.
3. The EXIF orientation tag is applied (phone photos are stored sideways and tagged).
4. More than 8 bits per channel (PIL modes ``I;16*``, ``I``, ``F``) is scaled to 8 bits: integers
   from 0..65535, floats from 0..1, both clipped. PIL's own conversion would clip instead of scale
   and turn a 16-bit greyscale picture almost all white.
5. An embedded ICC colour profile (Display P3 phone photos, print CMYK) is converted to sRGB.
6. Transparency (an alpha band, or a palette / greyscale transparency key) is composited on
   ``BACKGROUND``, white, as transformers' image processors do.
7. Everything else (palette, 1-bit, greyscale, CMYK, YCbCr, LAB, HSV) goes through PIL's conversion.

The library takes more than files (:func:`read_image`, and :func:`read_images` for a batch, whose errors name
``images[i]``): an open binary file object (read from where it stands, like a pipe), a PIL image, a numpy array
or a torch tensor. Array pixels: uint8 and bool as they are (True is white); uint16 scaled from 0..65535 as a
16-bit file; other integers must lie in 0..255; floats within 0..1 (torchvision's convention, a little
overshoot clipped) are scaled to 0..255 with a note, as a float file is; floats clearly in 0..255 are taken as
they are; anything else (a normalised tensor, 1.5 at most: neither reading is safe) is refused.
"""
from __future__ import annotations

import io
import os
import select
import stat
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # 40 megapixels: more than most phone photos; decoding and resizing it stays under 2 GB
MAX_SIDE = 6_400  # pixels on the longer side: LLaVA's pad to a square then makes at most 41 megapixels
MAX_ASPECT = 20  # longer side over shorter: resizing the shorter side to 336 px then makes at most 2.3 megapixels
MAX_STREAM_BYTES = 256 * 2**20  # what is read from a pipe
PIPE_WAIT = 3.0  # seconds a pipe may take to deliver its first byte
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on (transformers' convert_to_rgb uses white)
COLOUR_MODE = {"LA": "L", "PA": "RGB", "P": "RGB", "RGBA": "RGB", "RGBa": "RGB"}  # what an ICC transform reads
HIGH_DEPTH_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}  # full scale
FLOAT_SLACK = 0.05  # float pixels from -0.05 to 1.05 are 0..1 (resampling overshoots a little), clipped
UNIT_FLOATS_NOTE = "float pixels within 0..1 read as 0..1 (scaled to 0..255)"


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
    """Refuse an image of ``size`` (width, height) with no pixels, above ``max_pixels``, with a side over
    ``MAX_SIDE`` or an aspect ratio over ``MAX_ASPECT``, before it is decoded."""
    width, height = size
    if width * height == 0:
        raise ImageError(f"image {source} is {width} x {height}: it has no pixels; pass a picture of at least "
                         "1 x 1 pixels")
    if width * height > max_pixels:
        raise ImageError(f"image {source} is {width} x {height} = {width * height:,} pixels, over the limit of "
                         f"{max_pixels:,}: downscale it (the model reads it at a few hundred pixels a side) or pass "
                         "a larger max_pixels to rclib.images.open_image")
    if max(size) > MAX_SIDE:
        raise ImageError(f"image {source} is {width} x {height}, over {MAX_SIDE:,} pixels on a side: downscale it "
                         "(the model reads it at a few hundred pixels a side)")
    if max(size) > MAX_ASPECT * min(size):
        raise ImageError(f"image {source} is {width} x {height}, more than {MAX_ASPECT} times longer than wide: "
                         "crop it to the part to ask about (the model reads a square)")


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
    try:
        return converted_to_rgb(image, background)
    except ValueError as error:  # modes PIL cannot convert, e.g. "La"
        raise ImageError(f"cannot convert a PIL image of mode {image.mode!r} to RGB ({error}); convert it to "
                         "RGB or RGBA first") from error


def converted_to_rgb(image: Image.Image, background: tuple[int, int, int]) -> ImageRead:
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
    return ImageRead(image.convert("RGB"), notes)


def read_stream(path: str | Path, source: str) -> io.BytesIO:
    """The bytes of a pipe or device, read once (rule 0)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO without a writer opens at once
    try:
        if not select.select([fd], [], [], PIPE_WAIT)[0]:
            raise ImageError(f"image {source} is a pipe and nothing arrived in {PIPE_WAIT:g} s: write the image "
                             "into it, or pass an image file")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_STREAM_BYTES:
                raise ImageError(f"image {source} streams more than {MAX_STREAM_BYTES // 2**20} MiB: pass an image "
                                 "file")
            chunks.append(chunk)
    finally:
        os.close(fd)
    return io.BytesIO(b"".join(chunks))


def is_file_object(image) -> bool:
    """True for an open or closed file-like object (what ``open(path, "rb")`` or ``io.BytesIO`` gives)."""
    return isinstance(image, io.IOBase) or (callable(getattr(image, "read", None)) and hasattr(image, "closed"))


def read_file_object(file, source: str) -> io.BytesIO:
    """The bytes of an open binary file object from where it stands, up to MAX_STREAM_BYTES; it is not closed."""
    if file.closed:
        raise ImageError(f"image {source} is a closed file object: pass it while it is open (inside its `with` "
                         "block), or pass the file's path")
    if isinstance(file, io.TextIOBase):
        raise ImageError(f"image {source} is a file opened as text: open it with open(path, 'rb')")
    if hasattr(file, "readable") and not file.readable():
        raise ImageError(f"image {source} is a file object not open for reading: open it with open(path, 'rb')")
    data = file.read(MAX_STREAM_BYTES + 1)
    if isinstance(data, str):
        raise ImageError(f"image {source} is a file opened as text: open it with open(path, 'rb')")
    if len(data) > MAX_STREAM_BYTES:
        raise ImageError(f"image {source} holds more than {MAX_STREAM_BYTES // 2**20} MiB: pass a smaller image")
    return io.BytesIO(data)


def open_image(path, max_pixels: int = MAX_PIXELS, background: tuple[int, int, int] = BACKGROUND) -> ImageRead:
    """Read an image file (a path, or an open binary file object) as RGB following the module rules; a ValueError
    names the file and the problem."""
    file = path if is_file_object(path) else None
    source = (repr(str(file.name)) if isinstance(getattr(file, "name", None), (str, Path))
              else f"({type(file).__name__})" if file is not None else repr(str(path)))
    try:
        with warnings.catch_warnings():  # rclib's own pixel limit speaks instead of PIL's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if file is not None:
                stream = read_file_object(file, source)
            else:
                regular = stat.S_ISREG(os.stat(path).st_mode) or stat.S_ISDIR(os.stat(path).st_mode)
                stream = path if regular else read_stream(path, source)
            with Image.open(stream) as opened:
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


def is_tensor(image) -> bool:
    """True for a torch tensor (torch is not imported for the check)."""
    return "torch" in sys.modules and isinstance(image, sys.modules["torch"].Tensor)


def tensor_pixels(image) -> np.ndarray:
    """A torch tensor's values as a numpy array (on the CPU; bfloat16 and float16 as float32)."""
    if image.is_meta:
        raise ImageError("the image is a meta tensor (a shape without values): pass a tensor that holds pixels")
    image = image.detach().cpu()
    return np.asarray(image.float() if image.is_floating_point() else image)


def unit_pixels(pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    """Array pixels [H, W, C] of any numeric dtype as float64 in 0..255, by the rules of the module docstring."""
    if pixels.dtype == bool:
        return pixels * 255.0
    if pixels.dtype.kind in "ui":
        low, high = int(pixels.min()), int(pixels.max())
        if pixels.dtype == np.uint16:
            notes.append("uint16 pixels scaled to 8 bits from 0..65535")
            return pixels / 65535 * 255
        if low < 0 or high > 255:
            raise ImageError(f"the image's integer pixels run from {low} to {high}, outside 0..255: pass uint8 (0..255),"
                             " uint16 (0..65535) or floats in 0..1")
        return pixels.astype(np.float64)
    if not np.isfinite(pixels).all():
        raise ImageError("the image array holds NaN or infinite pixels: pass finite values in 0..255 (or 0..1)")
    low, high = float(pixels.min()), float(pixels.max())
    if -FLOAT_SLACK <= low and high <= 1 + FLOAT_SLACK:
        notes.append(UNIT_FLOATS_NOTE)
        return pixels * 255.0
    if -0.5 <= low and 2 <= high <= 255.5:
        return pixels.astype(np.float64)
    raise ImageError(f"the image's float pixels run from {low:g} to {high:g}, neither 0..1 (torchvision's convention) "
                     "nor 0..255: pass the picture before any normalisation, as floats in 0..1 or uint8")


def array_image(image) -> ImageRead:
    """An image array or tensor ([H, W], [H, W, C] or [C, H, W], C of 1, 3 or 4) as an RGB image; its pixels are
    read by the rules of the module docstring (floats within 0..1 scaled to 0..255, with a note)."""
    try:
        pixels = tensor_pixels(image) if is_tensor(image) else np.asarray(image)
    except ImageError:
        raise
    except Exception as error:  # an __array__ that fails, a dtype numpy lacks
        raise ImageError(f"cannot read the image as an array ({type(error).__name__}: {error}): pass a numpy array "
                         "or a tensor of pixels") from error
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3, 4) and pixels.shape[-1] not in (1, 3, 4):
        pixels = pixels.transpose(1, 2, 0)  # [C, H, W] -> [H, W, C]
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4) or not (pixels.dtype.kind in "uif" or
                                                                       pixels.dtype == bool):
        batch = " (a batch: pass its images as a list)" if pixels.ndim == 4 else ""
        raise ImageError(f"an image array must be [H, W, C] or [C, H, W] with 1, 3 or 4 channels of numbers, got "
                         f"shape {tuple(pixels.shape)} of {pixels.dtype}{batch}")
    check_pixel_count((pixels.shape[1], pixels.shape[0]), MAX_PIXELS, "(an array)")
    notes = []
    pixels = np.clip(np.round(unit_pixels(pixels, notes)), 0, 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    read = to_rgb(Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode))
    return ImageRead(read.image, notes + read.notes)


def image_read(image) -> ImageRead:
    """:func:`read_image` without the warnings: the RGB image and its notes."""
    if isinstance(image, (str, os.PathLike)) or is_file_object(image):
        return open_image(image)
    if isinstance(image, Image.Image):
        check_pixel_count(image.size, MAX_PIXELS, "(a PIL image)")
        return to_rgb(image)
    if is_tensor(image) or hasattr(image, "__array__"):
        return array_image(image)
    raise ImageError(f"an image must be a path, a PIL image, a numpy array or a tensor, got {type(image).__name__}"
                     ": pass one of these (or an open binary file)")


def read_image(image):
    """A path or open binary file becomes an RGB PIL image by :func:`open_image`, a PIL image by :func:`to_rgb` (its
    size checked as a file's), an array or tensor by :func:`array_image`; the notes are issued as
    :class:`ImageNote` warnings."""
    read = image_read(image)
    for note in read.notes:
        warnings.warn(f"{image if isinstance(image, (str, Path)) else 'image'}: {note}", ImageNote, stacklevel=2)
    return read.image


def read_images(images, count: int | None = None) -> list[Image.Image]:
    """A batch of images (a list or tuple, or a [B, ...] array or tensor) as RGB PIL images by :func:`read_image`;
    ``count``: how many questions they go with, one image each. A ValueError names ``images[i]`` and the fix; an
    empty batch, or a single image where a list belongs, is refused."""
    single = (images is None or isinstance(images, (str, os.PathLike, Image.Image)) or is_file_object(images)
              or ((is_tensor(images) or isinstance(images, np.ndarray)) and images.ndim != 4))
    if single or not isinstance(images, (list, tuple)) and not (is_tensor(images) or isinstance(images, np.ndarray)):
        raise ImageError(f"images must be a list of images, one per question, got {type(images).__name__}: pass "
                         "[image] for one (a [B, C, H, W] or [B, H, W, C] array or tensor is a batch too)")
    if len(images) == 0:
        raise ImageError("no images: pass at least one image, with one question about each")
    if count is not None and len(images) != count:
        raise ImageError(f"got {len(images)} images for {count} questions; pass one image per question")
    pictures = []
    for i, image in enumerate(images):
        try:
            read = image_read(image)
        except ValueError as error:
            raise ImageError(f"images[{i}]: {error}") from error
        for note in read.notes:
            named = f" ({image})" if isinstance(image, (str, Path)) else ""
            warnings.warn(f"images[{i}]{named}: {note}", ImageNote, stacklevel=2)
        pictures.append(read.image)
    return pictures
