"""Upload preprocessing: every format and mode decodes to the model's input; bad files get clear errors."""

import io

import numpy as np
import pytest
from app_helpers import png_bytes, png_header
from PIL import Image

from aep_core.errors import DataError
from aep_core.preprocess import MAX_PIXELS, prepare_array, prepare_image

MEAN, STD = [0.286], [0.353]


@pytest.mark.parametrize(
    "fmt,mode",
    [
        ("PNG", "RGB"),
        ("PNG", "L"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("PNG", "LA"),
        ("PNG", "I;16"),
        ("JPEG", "RGB"),
        ("JPEG", "CMYK"),
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("GIF", "P"),
        ("TIFF", "RGB"),
        ("TIFF", "CMYK"),
    ],
)
def test_formats_and_modes_decode_to_model_input(fmt, mode):
    p = prepare_image(png_bytes(mode, fmt=fmt), 28, 1, MEAN, STD)
    assert p.tensor.shape == (1, 1, 28, 28)
    assert p.preview.shape == (28, 28) and p.preview.dtype == np.uint8
    assert np.isfinite(p.tensor.numpy()).all()
    # light background: inverted, so the object (dark in the file) is bright in the centre
    assert p.inverted
    assert p.preview[12:16, 12:16].mean() > p.preview[:3].mean() + 100


def test_dark_background_is_not_inverted_and_rgb_models_get_three_channels():
    p = prepare_image(png_bytes(light_background=False), 32, 3, [0.5] * 3, [0.5] * 3)
    assert not p.inverted and p.tensor.shape == (1, 3, 32, 32)
    assert p.preview[14:18, 14:18].mean() > 150


def test_forced_inversion_overrides_auto():
    a = prepare_image(png_bytes(), invert=False)
    b = prepare_image(png_bytes(), invert=True)
    assert not a.inverted and b.inverted
    assert np.array_equal(255 - a.preview, b.preview)


def test_normalisation_uses_mean_and_std():
    p = prepare_image(png_bytes(), 28, 1, [0.5], [0.25])
    expected = (p.preview.astype(np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(p.tensor[0, 0].numpy(), expected, atol=1e-5)


def test_transparent_pixels_become_white_background():
    a = np.zeros((30, 30, 4), dtype=np.uint8)  # fully transparent...
    a[10:20, 10:20] = [0, 0, 0, 255]  # ...except an opaque black square
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, "PNG")
    p = prepare_image(buf.getvalue(), crop=False)
    assert p.inverted and any("Transparent" in n for n in p.notes)
    assert p.preview[0, 0] < 30 and p.preview[14, 14] > 200
    cropped = prepare_image(buf.getvalue())  # the square fills the frame once the background is trimmed
    assert cropped.preview.mean() > 200


def test_animated_gif_uses_first_frame():
    frames = [Image.new("L", (20, 20), 255), Image.new("L", (20, 20), 0)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    p = prepare_image(buf.getvalue(), invert=False)
    assert any("first frame" in n for n in p.notes)
    assert p.preview.mean() > 200  # the white first frame, not the black second one


def test_exif_rotation_is_applied():
    im = Image.new("L", (40, 20), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    assert prepare_image(buf.getvalue()).original_size == (20, 40)


@pytest.mark.parametrize(
    "data,words",
    [
        (b"", "empty"),
        (b"this is plain text, not an image", "not an image"),
        (png_bytes()[:60], "truncated"),
        (png_header(30000, 30000), "too large"),
        (png_header(7000, 7000), f"{MAX_PIXELS:,}"),
    ],
)
def test_bad_files_get_clear_errors(data, words):
    with pytest.raises(DataError, match=words):
        prepare_image(data)


def test_truncated_jpeg_is_refused():
    data = png_bytes(fmt="JPEG", size=(200, 200))
    with pytest.raises(DataError, match="truncated"):
        prepare_image(data[: len(data) // 2])


def test_unsupported_format_is_refused():
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "ICO")
    with pytest.raises(DataError, match="not supported"):
        prepare_image(buf.getvalue())


def test_large_photo_is_downscaled_fast():
    p = prepare_image(png_bytes(fmt="JPEG", size=(3000, 2000)))
    assert p.preview.shape == (28, 28) and p.original_size == (3000, 2000)


def test_prepare_array_matches_dataset_normalisation():
    img = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    x = prepare_array(img, MEAN, STD)
    assert x.shape == (1, 1, 28, 28)
    assert np.allclose(x[0, 0].numpy(), (img / 255 - MEAN[0]) / STD[0], atol=1e-5)


def test_photo_of_garment_on_white_recovers_the_training_look():
    """A Fashion-MNIST image shown as a photo (dark garment on white, large, JPEG, off-centre aspect) comes
    back close to the original training image."""
    from aep_core.data import load_slice

    original = load_slice()["images"][3]
    photo = Image.fromarray(255 - original).resize((420, 420), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (420, 560), 255)  # portrait photo: extra white above and below
    canvas.paste(photo, (0, 70))
    buf = io.BytesIO()
    canvas.convert("RGB").save(buf, "JPEG", quality=90)
    p = prepare_image(buf.getvalue())
    assert p.inverted
    r = np.corrcoef(p.preview.ravel().astype(float), original.ravel().astype(float))[0, 1]
    assert r > 0.85, r
