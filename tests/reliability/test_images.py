"""Images: every mode to the right RGB, with notes; decompression bombs refused before decoding."""
import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from rclib.images import BACKGROUND, ImageNote, open_image, read_image, to_rgb


def saved(tmp_path, image: Image.Image, name: str, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


def test_16_bit_greyscale_is_scaled_not_binarised(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = saved(tmp_path, Image.fromarray(ramp), "grey16.png")
    assert Image.open(path).mode == "I;16"
    read = open_image(path)
    pixels = np.asarray(read.image)
    assert read.image.mode == "RGB" and pixels.shape == (64, 64, 3)
    assert np.array_equal(pixels[..., 0], np.round(ramp / 65535 * 255).astype(np.uint8))
    assert (pixels == 255).mean() < 0.01, "PIL's own conversion made 99% of this picture white"
    assert read.notes == ["I;16 pixels scaled to 8 bits from 0..65535"]


def test_float_pixels_are_scaled_from_0_to_1():
    read = to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32)))
    assert np.asarray(read.image)[0, :, 0].tolist() == [0, 128, 255, 255]


def test_transparency_is_composited_on_the_stated_background(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red everywhere
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    rgba[2, :, 3] = 128  # one half-transparent row
    read = open_image(saved(tmp_path, Image.fromarray(rgba), "rgba.png"))
    pixels = np.asarray(read.image)
    assert BACKGROUND == (255, 255, 255)
    assert pixels[0, 0].tolist() == [200, 0, 0] and pixels[3, 0].tolist() == [255, 255, 255]
    assert pixels[2, 0].tolist() == [227, 127, 127]  # alpha 128/255 of red over white
    assert read.notes == ["transparency composited on RGB (255, 255, 255)"]


def test_palette_transparency_and_cmyk(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255, 0, 255, 0])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # palette entry 0 (blue) is transparent
    read = open_image(saved(tmp_path, palette, "palette.png", transparency=0))
    assert np.asarray(read.image)[0].tolist() == [[255, 255, 255], [0, 255, 0]]
    cmyk = open_image(saved(tmp_path, Image.new("CMYK", (2, 2), (0, 255, 255, 0)), "cmyk.jpg", quality=100))
    assert np.abs(np.asarray(cmyk.image, dtype=int) - [255, 0, 0]).max() <= 3  # no magenta-yellow ink: red


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((2, 3, 3), dtype=np.uint8)
    stored[0, 0] = 255  # stored sideways: 3 wide, 2 high, white top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view", as phones write it
    read = open_image(saved(tmp_path, Image.fromarray(stored), "phone.png", exif=exif))
    assert read.image.size == (2, 3), "shown upright: 2 wide, 3 high"
    assert np.asarray(read.image)[0, 1].tolist() == [255, 255, 255]
    assert read.notes == ["turned upright by its EXIF orientation tag (6)"]


def test_an_animation_uses_its_first_frame_with_a_note(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    read = open_image(path)
    assert np.asarray(read.image)[0, 0].tolist() == [255, 0, 0]
    assert read.notes == ["animated (3 frames): the first frame is used"]
    with pytest.warns(ImageNote, match=r"anim.gif: animated \(3 frames\): the first frame is used"):
        assert read_image(path).size == (4, 4)


def test_an_embedded_colour_profile_is_converted_to_srgb(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.fromarray(np.full((2, 2, 3), 90, dtype=np.uint8))
    read = open_image(saved(tmp_path, image, "icc.png", icc_profile=srgb))
    assert read.notes == ["converted from its embedded colour profile to sRGB"]
    assert np.abs(np.asarray(read.image, dtype=int) - 90).max() <= 1
    broken = open_image(saved(tmp_path, image, "bad-icc.png", icc_profile=b"not a profile"))
    assert broken.notes[0].startswith("its embedded colour profile could not be read")
    assert np.asarray(broken.image).max() == 90


# A decompression bomb or an oversized image is refused from its header, in one message, before decoding.
def test_a_decompression_bomb_and_an_oversized_image_are_refused_before_decoding(tmp_path, claimed_png):
    bomb = claimed_png("bomb.png", 30_000, 30_000)
    with pytest.raises(ValueError, match=r"image '.*bomb.png' is too large to decode safely \(.*\); downscale it"):
        open_image(bomb)
    big = claimed_png("big.png", 8_000, 6_000)  # 48 megapixels: under PIL's bomb error, over rclib's limit
    with pytest.raises(ValueError, match=r"is 8000 x 6000 = 48,000,000 pixels, over the limit of 40,000,000"):
        open_image(big)
    with pytest.raises(ValueError, match=r"2 x 2 = 4 pixels, over the limit of 3"):
        open_image(saved(tmp_path, Image.new("RGB", (2, 2)), "small.png"), max_pixels=3)


@pytest.mark.parametrize("content, message", [
    (None, "No such file"), (b"not an image", "not an image format PIL knows"),
    (b"GIF89a\x10\x00\x10\x00", "(damaged|truncated|not an image)"),
])
def test_missing_and_damaged_files_are_named(tmp_path, content, message):
    path = tmp_path / "photo.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"image file '.*photo.jpg'.*{message}"):
        open_image(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about damaged TIFF tags while reading them
def test_any_corruption_of_a_file_gives_an_image_or_a_value_error(tmp_path):
    rng = np.random.default_rng(0)
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buffer, fmt)
        clean = buffer.getvalue()
        for trial in range(40):
            data = bytearray(clean[: rng.integers(1, len(clean))] if trial % 2 else clean)
            for position in rng.integers(0, len(data), size=trial % 7):
                data[position] = rng.integers(0, 256)
            path = tmp_path / f"damaged.{fmt.lower()}"
            path.write_bytes(bytes(data))
            try:
                assert open_image(path).image.mode == "RGB"
            except ValueError as error:
                assert "damaged.{}".format(fmt.lower()) in str(error)
