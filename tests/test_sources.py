import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from vaekit.data import conform, encode_idx, from_array, load_train_test, read_images
from vaekit.data.sources import read_image_file, read_npy
from vaekit.errors import DataError

from .conftest import DATA_DIR, REPO

SRC = REPO / "src"


def save_png(path, array):
    Image.fromarray(array).save(path)
    return path


def test_builtin_split(mnist_test):
    images = read_images("mnist:test", DATA_DIR)
    assert torch.equal(images.images, mnist_test.images) and images.name == "mnist:test"


@pytest.mark.parametrize("array, expected_shape", [
    (np.zeros((5, 28, 28), np.uint8), (5, 1, 28, 28)),
    (np.zeros((5, 784), np.uint8), (5, 1, 28, 28)),
    (np.zeros((5, 1, 16, 16), np.uint8), (5, 1, 16, 16)),
    (np.zeros((5, 16, 16, 3), np.uint8), (5, 3, 16, 16)),
    (np.zeros((5, 3, 16, 16), np.uint8), (5, 3, 16, 16)),
])
def test_array_layouts(array, expected_shape):
    assert from_array(array, "a").images.shape == expected_shape


def test_dtypes_map_onto_uint8():
    torch.testing.assert_close(from_array(np.array([[[0.0, 0.5, 1.0]]]), "f").images.flatten(),
                               torch.tensor([0, 128, 255], dtype=torch.uint8))
    assert from_array(np.array([[[True, False]]]), "b").images.flatten().tolist() == [255, 0]
    assert from_array(np.array([[[0, 7, 255]]], dtype=np.int64), "i").images.flatten().tolist() == [0, 7, 255]


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 28, 28), np.uint8), "no images"),
    (np.zeros((4, 10), np.uint8), "rows of 10 pixels are not square images"),
    (np.zeros((4, 5, 5, 5), np.uint8), "4-D images need 1 or 3 channels"),
    (np.zeros((2, 2, 2, 2, 2), np.uint8), "expected images as N x H x W"),
    (np.full((2, 4, 4), 1.5), "float images must be in [0, 1], found values from 1.5 to 1.5"),
    (np.full((2, 4, 4), np.nan), "NaN or infinite"),
    (np.full((2, 4, 4), 300), "integer images must be in [0, 255], found values from 300 to 300"),
    (np.full((2, 4, 4), -1), "found values from -1"),
    (np.full((2, 4, 4), 1 + 1j), "got dtype complex128"),
    (np.array([["a"]]), "got dtype <U1"),
])
def test_bad_arrays(array, message):
    with pytest.raises(DataError) as info:
        from_array(array, "bad.npy")
    assert message in str(info.value) and str(info.value).startswith("bad.npy: ")


def test_npy_npz_and_idx_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.arange(6)
    np.save(tmp_path / "a.npy", images)
    np.savez(tmp_path / "b.npz", images=images, labels=labels)
    np.savez(tmp_path / "c.npz", images)  # one unnamed array
    (tmp_path / "d-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(images)))
    for name in ("a.npy", "b.npz", "c.npz", "d-idx3-ubyte.gz"):
        result = read_images(tmp_path / name)
        assert torch.equal(result.images[:, 0], torch.from_numpy(images)), name
    assert read_images(tmp_path / "b.npz").labels.tolist() == list(range(6))


def test_npz_without_an_images_array(tmp_path):
    np.savez(tmp_path / "m.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DataError, match="holds arrays a, b; name the images one of images"):
        read_images(tmp_path / "m.npz")


def test_folder_of_images_and_class_subfolders(tmp_path, mnist_test):
    digits = mnist_test.images[:6, 0].numpy()
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, d in enumerate(digits):
        save_png(flat / f"img{i}.png", d)
    images = read_images(flat)
    assert torch.equal(images.images[:, 0], torch.from_numpy(digits))
    assert images.names == tuple(f"img{i}.png" for i in range(6)) and images.labels is None
    classes = tmp_path / "classes"
    for name, d in (("cat", digits[0]), ("cat", digits[1]), ("dog", digits[2])):
        (classes / name).mkdir(parents=True, exist_ok=True)
        save_png(classes / name / f"{len(list((classes / name).iterdir()))}.png", d)
    images = read_images(classes)
    assert images.classes == ("cat", "dog") and images.labels.tolist() == [0, 0, 1]
    assert images.names == ("cat/0.png", "cat/1.png", "dog/0.png")


def test_rgb_and_gray_files(tmp_path):
    gray = save_png(tmp_path / "g.png", np.full((8, 8), 9, np.uint8))
    rgb = save_png(tmp_path / "c.png", np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30)]))
    assert read_image_file(gray).shape == (1, 8, 8)
    assert read_image_file(rgb).shape == (3, 8, 8) and read_image_file(rgb)[:, 0, 0].tolist() == [10, 20, 30]
    mixed = read_images(tmp_path)
    assert mixed.images.shape == (2, 3, 8, 8)  # grayscale is repeated into RGB beside colour images


def test_a_single_grayscale_image_is_writable_and_converts_without_a_warning(tmp_path):
    gray = save_png(tmp_path / "one.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    assert read_image_file(gray).flags.writeable  # np.asarray of a PIL image alone is a read-only view
    # torch warns once per process, so a fresh one, with every warning an error, reads the file
    code = ("import sys; from vaekit.data import read_images; "
            "x = read_images(sys.argv[1]).images; print(x.shape[0], int(x.sum()))")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code, str(gray)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0 and done.stderr == "" and done.stdout.split() == ["1", str(sum(range(64)))]


@pytest.mark.parametrize("content, message", [
    (b"", "unreadable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "unreadable image"),
    ("truncated", "unreadable image"),
])
def test_unreadable_images(tmp_path, content, message):
    path = tmp_path / "x.png"
    if content == "truncated":
        save_png(path, np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_images(path)
    assert str(path) in str(info.value)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        read_images(tmp_path / "empty")
    (tmp_path / "mixed").mkdir()
    save_png(tmp_path / "mixed" / "a.png", np.zeros((8, 8), np.uint8))
    save_png(tmp_path / "mixed" / "b.png", np.zeros((9, 8), np.uint8))
    save_png(tmp_path / "mixed" / "c.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match=r"differ in size \(HxW 9x8: 2 images, 8x8: 1 image\); give --image-size "
                                        r"9x8 \(the most common\)"):
        read_images(tmp_path / "mixed")
    with pytest.raises(DataError, match="no such file or directory"):
        read_images(tmp_path / "nope.npy")


def test_conform_to_a_models_shape():
    rgb = from_array(np.dstack([np.full((56, 56), v, np.uint8) for v in (255, 0, 0)])[None], "red")
    gray = conform(rgb, (1, 28, 28))
    assert gray.images.shape == (1, 1, 28, 28) and gray.images.unique().tolist() == [76]  # BT.601 luma of red
    back = conform(from_array(np.full((1, 28, 28), 100, np.uint8), "g"), (3, 28, 28))
    assert back.images.shape == (1, 3, 28, 28) and back.images.unique().tolist() == [100]
    with pytest.raises(DataError, match="images are 40x28, the model takes 28x28; resizing would distort"):
        conform(from_array(np.zeros((1, 28, 40), np.uint8), "wide"), (1, 28, 28))


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    images = np.arange(50, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    np.save(tmp_path / "a.npy", images)
    train, held = load_train_test(str(tmp_path / "a.npy"), 0.2, seed=1)
    assert (len(train), len(held)) == (40, 10)
    values = lambda s: set(s.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert values(train).isdisjoint(values(held)) and len(values(train) | values(held)) == 50
    again = load_train_test(str(tmp_path / "a.npy"), 0.2, seed=1)[1]
    assert (values(again) == values(held)
            and values(load_train_test(str(tmp_path / "a.npy"), 0.2, seed=2)[1]) != values(held))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(dtype=st.one_of(hnp.scalar_dtypes(), hnp.unsigned_integer_dtypes()),
                  shape=hnp.array_shapes(min_dims=0, max_dims=5, max_side=5)))
def test_any_array_gives_images_or_a_data_error(array):
    try:
        result = from_array(array, "fuzz")
    except DataError:
        return
    assert result.images.dtype == torch.uint8 and result.images.ndim == 4 and len(result) == array.shape[0]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_any_npy_bytes_give_images_or_a_data_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    path.write_bytes(data)
    try:
        read_npy(path)
    except DataError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 100))
def test_any_corrupted_png_gives_an_image_or_a_data_error(tmp_path_factory, noise, cut):
    path = tmp_path_factory.mktemp("png") / "x.png"
    save_png(path, np.arange(64, dtype=np.uint8).reshape(8, 8))
    good = path.read_bytes()
    path.write_bytes(good[:cut] + noise)
    try:
        assert read_image_file(path).dtype == np.uint8
    except DataError:
        pass
