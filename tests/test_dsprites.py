"""The generated dSprites set: its factors, its drawing, and its file."""

import math

import numpy as np
import pytest

from vaekit.data import dsprites, dsprites_file
from vaekit.errors import DataError


def test_factor_tables_follow_deepminds_file():
    assert dsprites.COUNT == 737_280 == 3 * 6 * 40 * 32 * 32
    assert dsprites.FACTOR_VALUES[1][0] == 0.5 and dsprites.FACTOR_VALUES[1][-1] == 1.0
    assert dsprites.FACTOR_VALUES[2][-1] == pytest.approx(2 * math.pi)
    assert dsprites.FACTOR_VALUES[3][-1] == 1.0 and len(dsprites.FACTOR_VALUES[4]) == 32


def test_image_numbers_and_factor_indices_round_trip_y_fastest():
    numbers = np.array([0, 1, 32, 1024, 40 * 1024, dsprites.COUNT - 1])
    indices = dsprites.indices_of(numbers)
    assert indices[1].tolist() == [0, 0, 0, 0, 1] and indices[2].tolist() == [0, 0, 0, 1, 0]
    assert indices[3].tolist() == [0, 0, 1, 0, 0] and indices[4].tolist() == [0, 1, 0, 0, 0]
    assert indices[5].tolist() == [2, 5, 39, 31, 31]
    assert dsprites.image_index_of(indices).tolist() == numbers.tolist()
    values = dsprites.values_of(indices)
    assert values[5].tolist() == pytest.approx([3.0, 1.0, 2 * math.pi, 1.0, 1.0])
    with pytest.raises(ValueError):
        dsprites.indices_of(np.array([dsprites.COUNT]))
    with pytest.raises(ValueError):
        dsprites.values_of(np.array([[3, 0, 0, 0, 0]]))


def test_a_subset_lists_every_combination_and_checks_its_indices():
    factors = dsprites.Factors(shape=(0, 2), scale=(5,), orientation=(0, 10), x=(0, 31), y=(3,))
    indices = factors.indices()
    assert len(indices) == 8 and indices[1].tolist() == [0, 5, 0, 31, 3]
    with pytest.raises(ValueError, match="orientation"):
        dsprites.Factors(orientation=(40,))


def test_every_sprite_fits_its_window_and_grows_with_scale():
    for shape in range(3):
        areas = []
        for scale in range(6):
            for orientation in (0, 7, 20):
                s = dsprites.sprite(shape, scale, orientation)
                assert not (s[0].any() or s[-1].any() or s[:, 0].any() or s[:, -1].any())
            areas.append(int(dsprites.sprite(shape, scale, 0).sum()))
        assert areas == sorted(areas) and len(set(areas)) == 6
    # Area against the continuous shape's: the square's 19 x 19 pixels, the ellipse's pi a b.
    assert dsprites.sprite(0, 5, 0).sum() == 19 * 19
    assert dsprites.sprite(1, 5, 0).sum() == pytest.approx(math.pi * 11.7 * 5.85, rel=0.05)


def test_orientation_symmetries():
    for shape in range(3):
        for scale in range(6):
            assert (dsprites.sprite(shape, scale, 0) == dsprites.sprite(shape, scale, 39)).all()
    ellipse = dsprites.sprite(1, 5, 0)
    assert (ellipse == ellipse[::-1, ::-1]).all() and not (ellipse == ellipse.T).all()
    heart = dsprites.sprite(2, 5, 0)
    assert (heart == heart[:, ::-1]).all() and not (heart == heart[::-1]).all()  # point up or down, not both
    assert not (dsprites.sprite(0, 5, 5) == dsprites.sprite(0, 5, 0)).all()


def test_positions_shift_the_sprite_one_pixel_per_step():
    images = dsprites.render(np.array([[2, 3, 9, 0, 0], [2, 3, 9, 1, 0], [2, 3, 9, 0, 1], [2, 3, 9, 31, 31]]))
    assert (images[1][:, 1:] == images[0][:, :-1]).all() and images[1][:, 0].sum() == 0
    assert (images[2][1:] == images[0][:-1]).all()
    assert len({int(i.sum()) for i in images}) == 1
    rows, cols = np.nonzero(images[3])
    assert rows.max() <= 63 and cols.max() <= 63 and set(np.unique(images)) == {0, 1}


def test_the_packed_blocks_are_the_rendered_images():
    indices = dsprites.Factors(shape=(1,), scale=(2,), orientation=(17,)).indices()
    block = dsprites.packed_block(1, 2, 17)
    assert block.shape == (1024, 512)
    assert (dsprites.unpack(block) == dsprites.render(indices)).all()
    assert (dsprites.unpack(np.packbits(dsprites.render(indices), axis=-1).reshape(-1, 512)) ==
            dsprites.render(indices)).all()


def small_set():
    return np.concatenate([dsprites.packed_block(s, 0, 0) for s in range(3)])


def test_the_file_round_trips_and_is_checked(tmp_path):
    packed = small_set()
    path = tmp_path / "d.vksprites"
    path.write_bytes(dsprites_file.encode(packed))
    assert (dsprites_file.read(path, len(packed)) == packed).all()
    with pytest.raises(DataError, match="expected 737280"):
        dsprites_file.read(path)
    data = bytearray(path.read_bytes())
    bad = tmp_path / "bad.vksprites"
    for what, doctored in [("SHA-256", data[:-1] + bytes([data[-1] ^ 1])), ("declares", data[:-512]),
                           ("magic", b"X" + data[1:]), ("header checksum", data[:20] + b"\x01" + data[21:]),
                           ("shorter than a header", data[:10])]:
        bad.write_bytes(bytes(doctored))
        with pytest.raises(DataError, match=what):
            dsprites_file.read(bad, len(packed))


def test_load_generates_once_then_reads(tmp_path):
    calls = []

    def generate(progress=False):
        calls.append(progress)
        return small_set()

    first = dsprites_file.load(tmp_path, generate=generate, count=3 * 1024)
    second = dsprites_file.load(tmp_path, generate=generate, count=3 * 1024)
    assert len(calls) == 1 and (first == second).all()
    assert dsprites_file.path_in(tmp_path).stat().st_size == 3 * 1024 * 512 + 64


def test_a_process_hashes_an_unchanged_file_once_and_a_changed_one_again(tmp_path, monkeypatch):
    import os

    path = dsprites_file.path_in(tmp_path)
    path.write_bytes(dsprites_file.encode(small_set()))
    old = os.stat(path).st_mtime - 60
    os.utime(path, (old, old))  # written a minute ago: not racily clean
    checks = []
    real_check = dsprites_file._check
    monkeypatch.setattr(dsprites_file, "_check", lambda *args: (checks.append(args), real_check(*args)))
    for _ in range(3):
        dsprites_file.verify(path, 3 * 1024)
    assert len(checks) == 1
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # doctored in place, same size; its modification time moves
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="SHA-256"):
        dsprites_file.verify(path, 3 * 1024)
    with pytest.raises(DataError, match="SHA-256"):  # and again: a failed check is never remembered
        dsprites_file.verify(path, 3 * 1024)
    fresh = tmp_path / "fresh" / dsprites_file.FILE_NAME
    fresh.parent.mkdir()
    fresh.write_bytes(dsprites_file.encode(small_set()))
    dsprites_file.verify(fresh, 3 * 1024)
    dsprites_file.verify(fresh, 3 * 1024)
    assert len(checks) == 5  # a file written just now is checked every time (a change could keep its mtime)


def test_two_first_uses_at_once_generate_once(tmp_path):
    import threading
    import time

    calls = []

    def generate(progress=False):
        calls.append(1)
        time.sleep(0.5)  # long enough for the other to arrive while this one writes
        return small_set()

    threads = [threading.Thread(target=dsprites_file.ensure, args=(tmp_path,), kwargs={"generate": generate,
                                                                                         "count": 3 * 1024})
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert (dsprites_file.read(dsprites_file.path_in(tmp_path), 3 * 1024) == small_set()).all()
