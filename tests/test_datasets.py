import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import MNIST, load_held_out, load_split, load_train_test, search_dirs
from vaekit.data import datasets
from vaekit.data.datasets import BUNDLED_DIR, FASHION_MNIST, SYSTEM_DIR, cache_dir, download_file, get_spec
from vaekit.errors import DataError

from .conftest import DATA_DIR, gz, write_files


@pytest.fixture
def mirror_server():
    """A loopback HTTP server; set .routes[path] = bytes to serve, anything else is a 404."""
    routes: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.routes, server.hits = routes, hits
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_bundled_mnist_loads_as_one_uint8_tensor(mnist_train, mnist_test):
    assert mnist_train.images.shape == (60000, 1, 28, 28) and mnist_train.images.dtype == torch.uint8
    assert mnist_test.images.shape == (10000, 1, 28, 28)
    assert mnist_test.labels.dtype == torch.int64
    assert torch.bincount(mnist_test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist_train.images.max() == 255 and mnist_train.images.min() == 0


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAEKIT_DATA_DIR", "/env/dir")
    dirs = search_dirs("/cli/dir")
    assert [str(d) for d in dirs] == ["/cli/dir", "/env/dir", "data", str(BUNDLED_DIR), "/usr/share/datasets",
                                      str(cache_dir())]
    monkeypatch.delenv("VAEKIT_DATA_DIR")
    assert [str(d) for d in search_dirs()] == ["data", str(BUNDLED_DIR), "/usr/share/datasets", str(cache_dir())]


def test_the_system_dataset_directory_is_searched_after_the_package_and_before_the_cache(tmp_path, monkeypatch,
                                                                                        fake_dataset):
    fake_dataset()  # no mirrors: nothing can be downloaded
    system = tmp_path / "usr-share-datasets"
    monkeypatch.setattr(datasets, "SYSTEM_DIR", system)
    monkeypatch.chdir(tmp_path)  # no ./data here
    with pytest.raises(DataError, match=str(system / "fake")):  # looked for there, and named
        load_split("fake", "test", download=False)
    write_files(system / "fake", fake_dataset.raw)  # gzipped, as Debian's package installs them
    pixels = np.frombuffer(bytearray(fake_dataset.raw["t10k-images-idx3-ubyte.gz"][16:]), np.uint8)
    assert torch.equal(load_split("fake", "test", download=False).images[:, 0],
                       torch.from_numpy(pixels.reshape(16, 28, 28)))
    write_files(cache_dir() / "fake", {name: b"\x00\x00\x08\x01" for name in fake_dataset.raw})  # corrupt
    assert len(load_split("fake", "train", download=False)) == 64  # the system copy wins over the cache's


def test_a_dataset_with_a_debian_package_names_it_when_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "SYSTEM_DIR", tmp_path / "none")
    with pytest.raises(DataError) as info:
        load_split("fashion-mnist", "test", tmp_path / "empty", download=False)
    assert str(info.value).endswith("(on Debian, apt-get install dataset-fashion-mnist puts them in "
                                    f"{tmp_path / 'none' / 'fashion-mnist'})")


def test_fashion_mnist_from_debians_package():
    """The official test split as dataset-fashion-mnist installs it (CI installs the package)."""
    if not (SYSTEM_DIR / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail("CI must have Fashion-MNIST (Debian's dataset-fashion-mnist package) in /usr/share/datasets")
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    test = load_split("fashion-mnist", "test", download=False)
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert test.classes == FASHION_MNIST.classes and len(test.classes) == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.name == "fashion-mnist:test"


def test_bundled_mnist_sits_in_the_package_and_is_found_from_any_directory(tmp_path, monkeypatch):
    import vaekit

    assert BUNDLED_DIR.is_absolute() and BUNDLED_DIR.parent.parent == Path(vaekit.__file__).parent
    names = sorted(file.name for pair in MNIST.splits.values() for file in pair)
    assert sorted(p.name for p in (BUNDLED_DIR / "mnist").glob("*.gz")) == names
    assert (DATA_DIR / "mnist").resolve() == (BUNDLED_DIR / "mnist").resolve()  # data/mnist in a clone links there
    monkeypatch.chdir(tmp_path)  # no ./data here, an empty cache, no network
    test = load_split("mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28) and int(test.images.sum()) == 264_923_200


def test_held_out_images_read_only_the_test_split(tmp_path, fake_dataset):
    fake_dataset()  # no mirrors: a file that is looked for and missing fails
    write_files(tmp_path / "fake", {k: v for k, v in fake_dataset.raw.items() if k.startswith("t10k")})
    held_out = load_held_out("fake", 0.1, 0, tmp_path)
    assert held_out.name == "fake:test" and len(held_out) == 16
    with pytest.raises(DataError, match="Fake files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz not"):
        load_train_test("fake", 0.1, 0, tmp_path)


def test_held_out_share_of_a_folder_is_the_one_training_held_out(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, size=(23, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    train, test = load_train_test(str(tmp_path / "x.npy"), 0.3, 5, standardize=True)
    held_out = load_held_out(str(tmp_path / "x.npy"), 0.3, 5, standardize=True)
    assert (len(train), len(test)) == (16, 7)
    assert torch.equal(held_out.images, test.images)
    plain = load_held_out(str(tmp_path / "x.npy"), 0.3, 5)
    assert torch.equal(plain.images[:, 0], torch.from_numpy(images[[0, 2, 3, 5, 8, 15, 16]]))
    assert not torch.equal(plain.images, held_out.images)  # standardized per image, as the run saw them


def test_every_missing_file_is_named_with_the_ways_to_point_at_local_copies(tmp_path, fake_dataset):
    fake_dataset()
    name = "train-labels-idx1-ubyte.gz"
    write_files(tmp_path / "mine" / "fake", {name: fake_dataset.raw[name]})
    with pytest.raises(DataError) as info:
        load_train_test("fake", 0.1, 0, tmp_path / "mine")
    message = str(info.value)
    assert message.startswith("Fake files train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                              "t10k-labels-idx1-ubyte.gz not found in ")  # the labels file that is there is not
    assert str(tmp_path / "mine" / "fake") in message and str(cache_dir() / "fake") in message
    assert "could not download Fake file train-images-idx3-ubyte.gz" in message  # the download tried first
    assert message.endswith("put the files in DIR/fake/ and pass --data-dir DIR, or set $VAEKIT_DATA_DIR to DIR")
    assert "\n" not in message
    name = "t10k-images-idx3-ubyte.gz"
    write_files(tmp_path / "mine" / "fake", {name: fake_dataset.raw[name]})
    with pytest.raises(DataError, match=r"^Fake file t10k-labels-idx1-ubyte.gz not found in .*, and downloads are off"):
        load_split("fake", "test", tmp_path / "mine", download=False)


def test_first_directory_with_the_files_wins(tmp_path, monkeypatch, fake_dataset):
    fake_dataset()
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path / "env" / "fake", fake_dataset.raw)
    write_files(tmp_path / "data" / "fake", {name: b"\x00\x00\x08\x01" for name in fake_dataset.raw})  # corrupt
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "env"))
    assert len(load_split("fake", "train")) == 64  # env dir comes before ./data


def test_uncompressed_files_are_accepted(tmp_path, fake_dataset):
    fake_dataset()
    write_files(tmp_path / "fake", fake_dataset.raw, compress=False)
    test = load_split("fake", "test", tmp_path)
    assert test.images.shape == (16, 1, 28, 28) and test.labels.shape == (16,)


def test_corrupt_file_names_the_file_and_the_fix(tmp_path, fake_dataset):
    fake_dataset()
    files = dict(fake_dataset.raw)
    files["t10k-images-idx3-ubyte.gz"] = files["t10k-images-idx3-ubyte.gz"][:-1] + b"\x07"
    write_files(tmp_path / "fake", files)
    with pytest.raises(DataError) as info:
        load_split("fake", "test", tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz: checksum mismatch" in message
    assert "delete it" in message and "\n" not in message


def test_truncated_gzip_is_reported(tmp_path, fake_dataset):
    fake_dataset()
    write_files(tmp_path / "fake", fake_dataset.raw)
    path = tmp_path / "fake" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        load_split("fake", "test", tmp_path)


def test_download_skips_failed_and_bad_mirrors(mirror_server, fake_dataset):
    spec = fake_dataset([f"{mirror_server.url}/down/", f"{mirror_server.url}/bad/", f"{mirror_server.url}/good/"])
    for name, data in fake_dataset.raw.items():
        mirror_server.routes[f"/bad/{name}"] = gz(data + b"x")  # right name, wrong content
        mirror_server.routes[f"/good/{name}"] = gz(data)
    test = load_split("fake", "test")
    assert len(test) == 16
    name = "t10k-images-idx3-ubyte.gz"
    assert mirror_server.hits[:3] == [f"/down/{name}", f"/bad/{name}", f"/good/{name}"]
    folder = cache_dir() / "fake"
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # a second load reads the cache and asks no mirror
    mirror_server.hits.clear()
    assert len(load_split("fake", "test")) == 16 and mirror_server.hits == []
    assert spec.name == "fake"


def test_all_mirrors_failing_gives_one_line_with_where_to_put_files(mirror_server, fake_dataset, tmp_path):
    fake_dataset([f"{mirror_server.url}/a/", f"{mirror_server.url}/b/"])
    mirror_server.routes["/b/train-images-idx3-ubyte.gz"] = b"not gzip, not idx"
    with pytest.raises(DataError) as info:
        load_split("fake", "train", tmp_path / "mine")
    message = str(info.value)
    assert "\n" not in message
    assert "could not download Fake file train-images-idx3-ubyte.gz" in message
    assert "/a/train-images-idx3-ubyte.gz: Not Found" in message
    assert "/b/train-images-idx3-ubyte.gz: checksum mismatch" in message
    assert str(tmp_path / "mine" / "fake") in message and str(cache_dir() / "fake") in message
    leftovers = list((cache_dir() / "fake").iterdir())
    assert leftovers == []  # no partial or unverified file left behind


def test_download_through_a_patched_opener(tmp_path, fake_dataset):
    spec = fake_dataset(["https://mirror.example/x/"])
    payload = gz(fake_dataset.raw["t10k-labels-idx1-ubyte.gz"])

    class Response:
        headers = {"Content-Length": str(len(payload))}

        def __init__(self):
            self.chunks = [payload[:5], payload[5:], b""]

        def read(self, n):
            return self.chunks.pop(0)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    seen = []

    def opener(url, timeout):
        seen.append((url, timeout))
        return Response()

    path = download_file(spec, spec.splits["test"][1], tmp_path, opener=opener)
    assert seen == [("https://mirror.example/x/t10k-labels-idx1-ubyte.gz", 30)]
    assert path == tmp_path / "t10k-labels-idx1-ubyte.gz"
    assert hashlib.md5(__import__("gzip").decompress(path.read_bytes())).hexdigest() == spec.splits["test"][1].md5


def test_unknown_dataset_and_split():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        get_spec("cifar")
    with pytest.raises(DataError, match="no split 'valid'"):
        load_split("mnist", "valid", DATA_DIR)


def test_table_lists_real_mirrors_and_md5s():
    assert MNIST.mirrors[0].startswith("https://")
    for images, labels in MNIST.splits.values():
        assert len(images.md5) == 32 and len(labels.md5) == 32
    assert np.all([name.endswith(".gz") for pair in MNIST.splits.values() for name in (pair[0].name, pair[1].name)])
