"""vaekit.data.preparation (channels, size, polarity) and the reading it relies on: folders at any depth, modes by
range."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import DataConfig, RunConfig
from vaekit.cli.args import image_size
from vaekit.data import ImageSet, conform, from_array, read_images
from vaekit.data.preparation import Preparation, background, border_brightness, fit_images, polarity_mismatch, prepare
from vaekit.data.sources import read_image
from vaekit.errors import ConfigError, DataError
from vaekit.runs import ADDED_BY_FORMAT, migrate_config


def images(array: np.ndarray, name: str = "test") -> ImageSet:
    return from_array(array, name)


def test_crop_keeps_the_centre_without_distorting():
    wide = np.zeros((1, 20, 40), np.uint8)  # H 20, W 40: the middle half white
    wide[:, :, 10:30] = 255
    cropped = fit_images(images(wide), (1, 20, 20))
    assert cropped.images.shape == (1, 1, 20, 20) and cropped.images.unique().tolist() == [255]
    halved = np.zeros((1, 16, 32), np.uint8)  # resized by 2 (16 -> 8), then the centre 8 of 16 columns kept
    halved[:, :, 4:28] = 255  # (the antialiasing filter spans 4 source columns, so a margin of 4)
    assert fit_images(images(halved), (1, 8, 8)).images.unique().tolist() == [255]
    tall = np.zeros((1, 40, 20), np.uint8)
    tall[:, 5:35] = 200
    assert fit_images(images(tall), (1, 10, 10)).images.unique().tolist() == [200]
    with pytest.raises(DataError, match="different aspect ratio"):  # runs before format 8
        fit_images(images(wide), (1, 20, 20), "aspect")


def test_crop_of_the_same_aspect_is_the_former_resize_and_no_change_is_the_same_tensor():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (3, 60, 60, 3), dtype=np.uint8)
    crop, aspect = fit_images(images(photo), (3, 28, 28)), conform(images(photo), (3, 28, 28))
    assert torch.equal(crop.images, aspect.images)
    same = images(photo)
    assert fit_images(same, (3, 60, 60)) is same
    upscaled = fit_images(images(rng.integers(0, 256, (2, 7, 9), dtype=np.uint8)), (1, 14, 14))
    assert upscaled.images.shape == (2, 1, 14, 14)


def test_channels_convert_by_luma_and_by_repeating():
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert fit_images(images(red), (1, 4, 4)).images.unique().tolist() == [76]  # 0.299 * 255
    gray = fit_images(images(np.full((1, 4, 4), 90, np.uint8)), (3, 4, 4)).images
    assert gray.shape == (1, 3, 4, 4) and gray.unique().tolist() == [90]


def test_border_brightness_and_the_polarity_rule():
    x = np.zeros((3, 10, 10), np.uint8)
    x[0] = 255  # white page
    x[1, 3:7, 3:7] = 255  # white digit on black: border dark
    x[2] = 150  # mid-gray border
    border = border_brightness(images(x).images)
    assert border.tolist() == pytest.approx([1.0, 0.0, 150 / 255])
    assert polarity_mismatch(border, 0.02).tolist() == [True, False, False]
    assert polarity_mismatch(border, 0.95).tolist() == [False, True, False]
    assert polarity_mismatch(border, 0.5).tolist() == [False, False, False]  # a background of no decided polarity
    assert polarity_mismatch(border, None).tolist() == [False, False, False]  # runs before format 8


def test_prepare_inverts_what_the_policy_says():
    x = np.zeros((2, 8, 8), np.uint8)
    x[0] = 255
    x[0, 2:6, 3:5] = 0  # a dark stroke on white
    x[1, 2:6, 3:5] = 255  # a light stroke on black
    shape = (1, 8, 8)
    auto = prepare(images(x), Preparation(shape, background=0.01, invert="auto"))
    assert auto.inverted.tolist() == [True, False] and torch.equal(auto.images.images[0], auto.images.images[1])
    assert "1 of 2 images look dark on light, while the run was trained on light on dark: inverted" in auto.note()
    off = prepare(images(x), Preparation(shape, background=0.01, invert="off"))
    assert off.inverted.tolist() == [False, False] and torch.equal(off.images.images[:, 0], torch.from_numpy(x))
    assert off.note().endswith("--invert auto inverts them")
    on = prepare(images(x), Preparation(shape, background=0.01, invert="on"))
    assert torch.equal(on.images.images[:, 0], 255 - torch.from_numpy(x)) and on.note() is None  # as asked
    unknown = prepare(images(x), Preparation(shape, invert="auto"))  # no statistic: nothing is judged
    assert unknown.note() is None and not unknown.inverted.any()


def test_the_background_of_mnist_is_black(mnist_test):
    assert background(mnist_test.images[:1000]) < 0.01
    assert background(255 - mnist_test.images[:1000]) > 0.99


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_folders_are_read_at_any_depth_with_class_subfolders(tmp_path):
    root = tmp_path / "data"
    save(root / "cats" / "a.png", np.full((6, 6), 10, np.uint8))
    save(root / "cats" / "deeper" / "still" / "b.png", np.full((6, 6), 20, np.uint8))
    save(root / "dogs" / "c.png", np.full((6, 6), 30, np.uint8))
    save(root / "dogs" / ".thumbs" / "d.png", np.full((6, 6), 40, np.uint8))  # hidden: skipped
    (root / "notes").mkdir()  # an empty class keeps its number
    read = read_images(root)
    assert read.names == ("cats/a.png", "cats/deeper/still/b.png", "dogs/c.png")
    assert read.labels.tolist() == [0, 0, 1] and read.classes == ("cats", "dogs", "notes")
    assert read.images[:, 0, 0, 0].tolist() == [10, 20, 30]
    flat = tmp_path / "flat"
    save(flat / "x.png", np.full((6, 6), 1, np.uint8))
    save(flat / "sub" / "y.png", np.full((6, 6), 2, np.uint8))
    both = read_images(flat)  # images at the top: every image, no labels
    assert both.names == ("sub/y.png", "x.png") and both.labels is None


def test_a_folder_of_differing_sizes_is_fitted_as_it_is_read(tmp_path):
    save(tmp_path / "a.png", np.full((30, 40), 200, np.uint8))
    save(tmp_path / "b.png", np.full((64, 48, 3), 100, np.uint8))
    with pytest.raises(DataError, match=r"differ in size \(HxW 30x40: 1 image, 64x48: 1 image\); give --image-size "
                                        r"30x40 \(the most common\)"):
        read_images(tmp_path)
    fitted = read_images(tmp_path, size=(16, 16))
    assert fitted.images.shape == (2, 3, 16, 16)  # gray beside colour: repeated to RGB
    assert fitted.images[0].unique().tolist() == [200] and fitted.images[1].unique().tolist() == [100]


def test_modes_are_read_by_their_range(tmp_path):
    sixteen = np.array([[0, 32768, 65535]], np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")  # 16-bit grayscale PNG
    assert read_image(tmp_path / "deep.png")[0].tolist() == [[[0, 128, 255]]]
    Image.fromarray(sixteen).save(tmp_path / "deep.tif")
    assert read_image(tmp_path / "deep.tif")[0].tolist() == [[[0, 128, 255]]]
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "float.tif")
    assert read_image(tmp_path / "float.tif")[0].tolist() == [[[0, 128, 255]]]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), 0  # fully transparent: the colour is kept, the alpha dropped
    array, alpha = read_image(save(tmp_path / "rgba.png", rgba, "RGBA"))
    assert alpha and array.shape == (3, 2, 2) and array[:, 0, 0].tolist() == [10, 20, 30]
    la = np.stack([np.full((2, 2), 77, np.uint8), np.full((2, 2), 128, np.uint8)], axis=-1)
    array, alpha = read_image(save(tmp_path / "la.png", la, "LA"))
    assert alpha and array.shape == (1, 2, 2) and array.max() == 77  # gray with alpha stays gray
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "palette.png")
    array, alpha = read_image(tmp_path / "palette.png")
    assert not alpha and array[:, 1, 1].tolist() == [200, 100, 50] and array[:, 0, 0].tolist() == [0, 0, 0]


def test_a_photo_is_turned_the_way_its_exif_orientation_says(tmp_path):
    photo = np.zeros((2, 3, 3), np.uint8)  # 2 rows, 3 columns, the top left pixel red
    photo[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    Image.fromarray(photo).save(tmp_path / "turned.png", exif=exif)
    array, _ = read_image(tmp_path / "turned.png")
    assert array.shape == (3, 3, 2) and array[:, 0, 1].tolist() == [255, 0, 0]  # now 3 rows; red at the top right


def test_alpha_is_said_once_per_folder(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", np.zeros((4, 4, 4), np.uint8), "RGBA")
    lines = []
    read_images(tmp_path, warn=lines.append)
    assert len(lines) == 1 and "3 of 3 images have an alpha channel, which is dropped" in lines[0]


def test_image_size_flag():
    assert image_size("32") == (32, 32) and image_size("64x48") == (64, 48) and image_size("8X4") == (8, 4)
    for bad in ("0", "32x", "x32", "3x4x5", "-4", "1e3", "99999999", "²"):
        with pytest.raises(argparse.ArgumentTypeError):
            image_size(bad)


def test_config_records_the_preparation_and_old_runs_keep_theirs():
    config = RunConfig(data=DataConfig(background=0.0123))
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert RunConfig.from_dict(RunConfig().to_dict()).data.background is None
    with pytest.raises(ConfigError, match="data.background must be a number in"):
        DataConfig(background=1.5)
    with pytest.raises(ConfigError, match="data.resize must be one of crop, aspect"):
        DataConfig(resize="stretch")
    with pytest.raises(ConfigError, match="data.background must be a number"):
        RunConfig.from_dict({**RunConfig().to_dict(), "data": {**RunConfig().to_dict()["data"], "background": "0.1"}})
    old = RunConfig().to_dict()
    del old["data"]["resize"], old["data"]["background"]
    migrated = RunConfig.from_dict(migrate_config(old, 7))
    assert (migrated.data.resize, migrated.data.background) == ("aspect", None) and 8 in ADDED_BY_FORMAT
