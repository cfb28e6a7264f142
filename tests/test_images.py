import numpy as np
import pytest
from PIL import Image

from singan_tf.errors import InputError
from singan_tf.images import bundled_image, contact_sheet, load_image, save_image, to_uint8


def test_bundled_images_load_in_range(rocket, hubble):
    assert rocket.shape == (427, 640, 3) and rocket.dtype == np.float32
    assert hubble.shape == (279, 320, 3)
    for im in (rocket, hubble):
        assert -1.0 <= im.min() < -0.9 and 0.9 < im.max() <= 1.0
    assert (bundled_image().parent / "ATTRIBUTION.md").is_file()


def test_round_trip_is_exact_for_8bit(tmp_path, rocket):
    path = save_image(rocket, tmp_path / "r.png")
    again = load_image(path)
    np.testing.assert_array_equal(to_uint8(again), to_uint8(rocket))


def test_grayscale_is_converted(tmp_path, caplog):
    arr = (np.arange(40 * 50) % 256).reshape(40, 50).astype(np.uint8)
    Image.fromarray(arr, "L").save(tmp_path / "g.png")
    im = load_image(tmp_path / "g.png")
    assert im.shape == (40, 50, 3)
    np.testing.assert_array_equal(im[..., 0], im[..., 2])
    assert "grayscale" in caplog.text


def test_rgba_drops_alpha(tmp_path, caplog):
    arr = np.zeros((30, 30, 4), np.uint8)
    arr[..., 0] = 255
    arr[..., 3] = 10
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert im.shape == (30, 30, 3)
    np.testing.assert_allclose(im[0, 0], [1.0, -1.0, -1.0])
    assert "alpha" in caplog.text


def test_16bit_is_scaled_by_its_range(tmp_path):
    arr = np.full((20, 20), 65535, np.uint16)
    arr[:10] = 32768
    Image.fromarray(arr).save(tmp_path / "d.png")
    im = load_image(tmp_path / "d.png")
    assert im[15, 0, 0] == pytest.approx(1.0)
    assert im[0, 0, 0] == pytest.approx(32768 / 65535 * 2 - 1, abs=1e-6)


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    im.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").shape == (40, 20, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.png", "no such file"),
        (lambda p: p, "is a directory"),
        (lambda p: (p / "t.txt").write_text("hello") and p / "t.txt", "not an image"),
    ],
)
def test_bad_paths_give_one_line(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as err:
        load_image(make(tmp_path))
    assert "\n" not in str(err.value)


def test_truncated_image(tmp_path, rocket):
    path = save_image(rocket, tmp_path / "r.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="unreadable image"):
        load_image(path)


def test_contact_sheet_layout(rocket):
    tiles = [rocket[:20, :30]] * 5
    sheet = contact_sheet(tiles, columns=3, gap=2)
    assert sheet.shape == (2 * 20 + 2, 3 * 30 + 2 * 2, 3) and sheet.dtype == np.uint8
    assert np.all(sheet[20:22] == 255)


def test_decompression_bomb_is_a_clear_error(tmp_path, rocket, monkeypatch):
    path = save_image(rocket, tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 427x640 is > 2x this
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(path)


def test_palette_with_transparency(tmp_path, caplog):
    im = Image.new("P", (30, 30), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    out = load_image(tmp_path / "p.png")
    np.testing.assert_allclose(out[0, 0], [1.0, -1.0, -1.0])
    assert "alpha" in caplog.text


def test_16bit_tiff(tmp_path):
    arr = np.linspace(0, 65535, 40 * 40).reshape(40, 40).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.tif")
    im = load_image(tmp_path / "d.tif")
    assert im.min() == pytest.approx(-1.0) and im.max() == pytest.approx(1.0)
    assert len(np.unique(im[..., 0])) > 256  # finer than 8 bits survived


def test_written_files_get_the_usual_mode(tmp_path, rocket):
    import os

    path = save_image(rocket[:10, :10], tmp_path / "m.png")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
