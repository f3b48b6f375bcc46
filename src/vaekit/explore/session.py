"""The explorer's library objects, pure of HTTP: loaded runs, their 2-D maps, and bounded calls that decode,
encode, sample and find neighbours, returning numbers and PNG bytes. `vaekit explore`'s server calls them;
a notebook can too:

    explorer = Explorer.open(["runs/seed"])
    run = explorer.get("seed")
    run.map_document()["points"][:3]              # the test images' posterior means in 2-D
    png = run.decode_png([[0.0] * run.latent_dim])  # the prior's centre, decoded

Every value a caller passes is checked here (a request's numbers are a user's), and every refusal is a
`Refused` (a ConfigError) carrying the HTTP status a server answers it with. Each run's torch work is
serialized by its own lock, so a threaded server computes one request per model at a time, and no request
holds more than its bounded batch in memory.
"""

from __future__ import annotations

import base64
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from typing import NamedTuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..choices import INTERPOLATIONS, INVERT_MODES, PROJECTIONS
from ..errors import ConfigError, DataError
from ..evaluate import EVAL_BATCH
from ..plots import grid_png, image_grid, png_bytes
from ..rng import make_generator, seeded_choice
from ..runs import Run, load_run

MAX_DECODE_ROWS = 256  # latents decoded by one request
MAX_SAMPLES = 64  # prior samples drawn by one request
MAX_STEPS = 64  # images along one interpolation
MAX_SCALE = 16  # pixel zoom of returned images
MAX_LATENT_VALUE = 1e3  # |z| accepted: a standard-normal prior puts no mass past ~10
MAX_MAP_POINTS = 50_000  # test images on a map (each kept as uint8 pixels and a posterior mean)
MAX_SEED = 2**63 - 1
MAX_UPLOAD_BYTES = 10 * 2**20  # one uploaded image file
NEAREST = 5  # neighbours returned for an uploaded image
# One PNG grid is drawn at a time, whichever run it is for: a grid may hold 64 M pixels (its uint8 canvas and PNG
# buffers some 100 MB), and 16 requests drawing theirs at once held 1.3 GB.
GRID_LOCK = threading.Lock()
PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
MAP_NOTES = {
    "pca": "The map is the PCA plane of the test images' posterior means. A click at (x, y) decodes "
           "z = mean + x * components[0] + y * components[1]: the point of the plane through the mean that "
           "the projection maps back to; the latent's other directions are held at the mean.",
    "nonlinear": "The map is a {title} embedding of the test images' posterior means, which has no inverse. "
                 "A click at (x, y) decodes z = mean + x * components[0] + y * components[1], the least-squares "
                 "linear map from the map's points back to their means: an approximation of the latent there.",
}


class Refused(ConfigError):
    """A request the explorer will not serve, with the HTTP status that says why (400 bad, 404 unknown run,
    413 too large, 415 not a PNG or JPEG)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LatentMap:
    """Test images' positions in 2-D: points (N, 2), the test index of each, and the linear map back
    (z = mean + points @ components) that a click decodes."""

    method: str
    points: np.ndarray  # (N, 2) float64
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (2, D)

    def latents(self, points: np.ndarray) -> np.ndarray:
        """The latents (K, D) that map points (K, 2) decode to."""
        return self.mean + points @ self.components

    def place(self, mu: np.ndarray, nearest_row: int) -> list[float]:
        """Where the latent mean `mu` (D,) lies on the map: its PCA coordinates, or (for t-SNE and UMAP, which
        place no new point) the point of its nearest test image."""
        if self.method == "pca":
            return [float(v) for v in (mu - self.mean) @ self.components.T]
        return [float(v) for v in self.points[nearest_row]]


def latent_map(mu: torch.Tensor, method: str = "pca", seed: int = 0) -> LatentMap:
    """The 2-D map of posterior means (N, D): PCA (the same centring as `representation.project_2d`), or t-SNE
    or UMAP with a least-squares linear map back."""
    if method not in PROJECTIONS:
        raise ConfigError(f"unknown map {method!r}; choose one of {', '.join(PROJECTIONS)}")
    z = mu.double().cpu()
    mean = z.mean(0)
    centred = z - mean
    if method == "pca":
        if len(z) < 2:
            raise DataError(f"a map needs at least 2 test images, got {len(z)}")
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        components = v[:2]
        if len(components) < 2:  # a one-dimensional latent: the second axis decodes nothing
            components = torch.cat([components, torch.zeros(1, z.shape[1], dtype=z.dtype)])
        return LatentMap(method, (centred @ components.T).numpy(), mean.numpy(), components.numpy())
    from ..representation import project_2d

    points = torch.from_numpy(np.asarray(project_2d(mu.float().cpu(), method, seed), dtype=np.float64))
    p_mean = points.mean(0)
    components = torch.linalg.lstsq(points - p_mean, centred).solution  # (2, D)
    return LatentMap(method, points.numpy(), (mean - p_mean @ components).numpy(), components.numpy())


def rounded(points: np.ndarray, digits: int = 6) -> np.ndarray:
    """`points` to `digits` significant digits of their extent (a map of any scale; shorter JSON)."""
    extent = float(np.abs(points).max()) if points.size else 0.0
    if not extent > 0:
        return points
    return np.round(points, max(0, digits - math.ceil(math.log10(extent))))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_png(image: torch.Tensor, scale: int = 1) -> bytes:
    """One image (C, H, W) in [0, 1] as PNG, each pixel `scale` pixels a side."""
    return png_bytes(image_grid(image[None], nrow=1, padding=0, scale=scale))


def check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise Refused(f"scale must be an integer from 1 to {MAX_SCALE}, got {short(scale)}")
    return scale


def check_count(value, name: str, most: int, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise Refused(f"{name} must be an integer from {least} to {most}, got {short(value)}")
    return value


def short(value) -> str:
    """A value as an error quotes it: never more than 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"...({len(text):,} characters)"


def check_rows(rows, width: int, name: str = "z", most: int = MAX_DECODE_ROWS,
               bound: float = MAX_LATENT_VALUE) -> np.ndarray:
    """A JSON list of 1..`most` rows of `width` finite numbers within +-bound, as float64 (K, width)."""
    if not isinstance(rows, list) or not rows:
        raise Refused(f"{name} must be a non-empty list of rows of {width} numbers, got {short(rows)}")
    if len(rows) > most:
        raise Refused(f"{name} has {len(rows):,} rows; at most {most} are decoded at once")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            found = f"{len(row)} values" if isinstance(row, list) else short(row)
            raise Refused(f"{name}[{i}] must be a list of {width} numbers (the latent's length), got {found}")
        for value in row:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Refused(f"{name}[{i}] holds {short(value)}, not a number")
            # an int is compared as it is: math.isfinite would overflow on one past a float's range
            if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > bound:
                raise Refused(f"{name}[{i}] holds {short(value)}; every value must be finite and within +-{bound:g}")
    return np.asarray(rows, dtype=np.float64)


def image_kind(data: bytes) -> str:
    """"png" or "jpeg" by the file's magic bytes; Refused (415) for anything else."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    raise Refused("the upload is not a PNG or JPEG image (by its first bytes); only PNG and JPEG are read", 415)


def read_upload(data: bytes) -> tuple[torch.Tensor, bool, int]:
    """An uploaded PNG or JPEG as uint8 (1, C, H, W) (its first frame), whether it had an alpha channel, and how
    many frames it holds (an animated PNG more than 1), read by vaekit's bounded image reader
    (`data.sources.read_image`: its pixel and byte limits, through a regular temp file)."""
    from ..data.sources import read_image

    if len(data) > MAX_UPLOAD_BYTES:
        raise Refused(f"the upload is {len(data):,} bytes; at most {MAX_UPLOAD_BYTES:,} are read", 413)
    kind = image_kind(data)
    handle, name = tempfile.mkstemp(prefix="vaekit-upload-", suffix=f".{kind}")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        try:
            array, alpha = read_image(Path(name))
        except DataError as e:  # the message names the temp file: say "the upload" instead
            raise Refused(str(e).replace(name, "the upload"), 400) from None
        frames = frame_count(name)
    finally:
        os.unlink(name)
    return torch.from_numpy(array)[None], alpha, frames


class Neighbours(NamedTuple):
    """The images an upload's nearest neighbours come from: `split` "train" (a seeded sample of the run's
    training images) or "test" (the map's), their indices in that split, uint8 images and posterior means."""

    split: str
    indices: torch.Tensor
    images: torch.Tensor
    mu: torch.Tensor


def nearest_rows(means: torch.Tensor, mu: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of the `k` posterior means (N, D) nearest `mu` (D,) in Euclidean distance, and the distances."""
    distances = torch.linalg.vector_norm(means - mu.float().cpu(), dim=1)
    found = torch.topk(distances, min(k, len(distances)), largest=False)
    return found.indices, found.values


def frame_count(path: str) -> int:
    """The frames of an image file read_image has read (its header: an APNG's acTL chunk, a JPEG's MPO index)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # read_image read it; a count it cannot give is one frame
        return 1


class ExploredRun:
    """One run as the explorer shows it: its model, its test images on a 2-D map (at most `map_points`, a seeded
    choice when there are more), their posterior means, per-dimension KL, and the run's anomaly detector."""

    def __init__(self, name: str, run: Run, *, map_method: str = "pca", map_points: int = 10_000,
                 data_dir: str | Path | None = None, seed: int = 0, progress: bool = False):
        from ..data import ImageSet
        from ..detector import Detector

        check_count(map_points, "map_points", MAX_MAP_POINTS, least=2)
        # what the explorer asks of a family is what traversing asks: encode, usage (means and KLs), decode
        if reason := run.model.unsupported("traverse"):
            raise ConfigError(f"{name} cannot be explored: {reason}")
        self.name, self.run, self.model = name, run, run.model
        self.device = next(run.model.parameters()).device
        self.lock = threading.Lock()
        test, train, why = self._read_images(data_dir)
        self.indices = seeded_choice(len(test), map_points, seed)  # in test-set order
        shown: ImageSet = test.subset(self.indices)
        self.images = shown.images  # (N, C, H, W) uint8, as the run sees them
        self.labels = shown.labels
        self.classes = list(shown.classes) if shown.labels is not None and shown.classes else None
        self.mu, self.kl = self._read_latents(shown, progress)
        self.map = latent_map(self.mu, map_method, seed)
        self.neighbours, self.neighbours_note = self._training_neighbours(train, why, map_points, seed, progress)
        self.detector, self.detector_note = self._detector(Detector, data_dir)
        self._samplers: dict = {}

    # --- what is fixed once the run is loaded --------------------------------------------------------
    @torch.no_grad()
    def _read_latents(self, images, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior means (N, D) on the CPU of the map's images (read as `embed` reads them), and each
        dimension's mean KL (D,) where the family gives it in closed form; `progress`: a bar on stderr."""
        from tqdm import tqdm

        x = self.run.inputs(images, for_latents=True)
        means, kls = [], []
        for start in tqdm(range(0, len(x), EVAL_BATCH), desc=f"{self.name}: encoding the map's images",
                          unit="batch", leave=False, disable=not progress):
            usage = self.model.usage(x[start:start + EVAL_BATCH])
            means.append(usage.means.cpu())
            if usage.kl_per_dim is not None:
                kls.append(usage.kl_per_dim.double().sum(0).cpu())
        kl = torch.stack(kls).sum(0) / len(x) if len(kls) == len(means) else None
        return torch.cat(means).float(), kl

    def _read_images(self, data_dir):
        """The run's held-out images, and its training images (None, and why, where they cannot be read, as when its
        data is not on this machine): one read of the data for both."""
        from ..data import load_train_test

        data = self.run.config.data
        try:
            train, test = load_train_test(data.name, data.validation, self.run.config.train.seed, data_dir,
                                          preparation=self.run.preparation())
        except DataError as e:
            return self.run.held_out(data_dir), None, e
        return test, train, None

    def _training_neighbours(self, train, why: DataError | None, count: int, seed: int, progress: bool):
        """The training images an upload's nearest neighbours are searched among (at most `count`, a seeded
        choice when there are more) with their posterior means, as Neighbours; the test images on the map, and
        why, when the run's training images cannot be read."""
        if train is None:
            return (Neighbours("test", self.indices, self.images, self.mu),
                    f"nearest images are the map's test images: the training images cannot be read ({why})")
        order = seeded_choice(len(train), count, seed)
        chosen = train.subset(order)
        return Neighbours("train", order, chosen.images, self._read_latents(chosen, progress)[0]), None

    def _detector(self, Detector, data_dir):
        """The run's calibrated detector (threshold.json), or when it has none, or one this explorer cannot
        use alone (calibrated for a mixture), the uncalibrated elbo score and why."""
        try:
            return Detector.load(self.run, data_dir=data_dir), None
        except ConfigError as e:
            note = f"the run's threshold is not used: {e}"
            return Detector(self.run, method="elbo", combine="density", data_dir=data_dir), note

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def dims_by_kl(self) -> list[int]:
        """The latent dimensions, most used first: by mean KL, or without a closed-form KL by the variance of
        the test images' means."""
        measure = self.kl if self.kl is not None else self.mu.double().var(0)
        return torch.argsort(measure, descending=True, stable=True).tolist()

    def samplers(self) -> list[str]:
        """The samplers this run can draw from: the prior, and those fitted by `vaekit fit-sampler`."""
        from ..samplers import SAMPLERS
        from ..samplers.store import sampler_files

        return [name for name in SAMPLERS.names()
                if not SAMPLERS.get(name).fitted or all(p.is_file() for p in sampler_files(self.run.path, name))]

    def describe(self) -> dict:
        """The run as GET /api/runs lists it."""
        layers = [len(range(self.latent_dim)[part]) for _, part in self.model.layers]
        return {
            "name": self.name, "family": self.model.family, "latent_dims": self.latent_dim, "layers": layers,
            "layer_names": [name for name, _ in self.model.layers],
            "image_shape": list(self.images.shape[1:]), "has_labels": self.labels is not None,
            "map_points": len(self.indices), "threshold": self.detector.threshold,
            "score_method": self.detector.method, "threshold_note": self.detector_note,
            "samplers": self.samplers(), "dims_by_kl": self.dims_by_kl(),
            "kl": None if self.kl is None else [round(float(v), 6) for v in self.kl],
            "config": self.run.config.to_dict(),
        }

    def map_document(self) -> dict:
        """The map as GET /api/map returns it."""
        note = (MAP_NOTES["pca"] if self.map.method == "pca" else
                MAP_NOTES["nonlinear"].format(title="t-SNE" if self.map.method == "tsne" else "UMAP"))
        return {
            "method": self.map.method, "points": rounded(self.map.points).tolist(),
            "labels": None if self.labels is None else self.labels.tolist(), "classes": self.classes,
            "indices": self.indices.tolist(),
            "inverse": {"kind": "linear", "mean": self.map.mean.tolist(), "components": self.map.components.tolist()},
            "note": note,
        }

    # --- calls --------------------------------------------------------------------------------------
    def row(self, index) -> int:
        """The map row of test image `index`; Refused if it is not on the map."""
        check_count(index, "index", MAX_SEED, least=0)
        row = int(torch.searchsorted(self.indices, index))
        if row >= len(self.indices) or int(self.indices[row]) != index:
            raise Refused(f"test image {index} is not on the map of {self.name} (its indices run from "
                          f"{int(self.indices[0])} to {int(self.indices[-1])}: GET /api/map lists them)", 404)
        return row

    @torch.no_grad()
    def pictures(self, z: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Decoded images (K, C, H, W) in [0, 1] on the CPU for latents (K, D) already checked: the family's
        `pictures` (a pixel-group model's drawn from one generator seeded 0, so the same rows give the same images)."""
        z = torch.as_tensor(z, dtype=torch.float32).to(self.device)
        with self.lock:
            images = self.model.pictures(z).float().cpu()
        return torch.nan_to_num(images, nan=0.0).clamp(0, 1)

    def latents(self, z=None, map_points=None) -> np.ndarray:
        """Checked latents (K, D) from a request's `z` rows, or from `map_points` rows [x, y] on the map."""
        if (z is None) == (map_points is None):
            raise Refused("give either z (latent rows) or map_points ([x, y] rows), not both or neither")
        if z is not None:
            return check_rows(z, self.latent_dim)
        bound = float(np.abs(self.map.points).max()) * 10 + 10  # far outside the map decodes nothing useful
        return self.map.latents(check_rows(map_points, 2, "map_points", bound=bound))

    def decode_images(self, z=None, map_points=None, scale: int = 1) -> list[str]:
        """POST /api/decode as JSON: a data-URL PNG per latent row."""
        scale = check_scale(scale)
        return [data_url(image_png(image, scale)) for image in self.pictures(self.latents(z, map_points))]

    def decode_png(self, z=None, map_points=None, scale: int = 1) -> bytes:
        """POST /api/decode as a PNG grid: the decoded images, up to 16 a row."""
        scale = check_scale(scale)
        images = self.pictures(self.latents(z, map_points))
        try:
            with GRID_LOCK:
                return grid_png(images, nrow=min(16, max(1, math.ceil(math.sqrt(len(images))))), scale=scale)
        except ConfigError as e:  # the picture's pixel bound
            raise Refused(str(e).replace("--scale", "scale")) from None

    def image(self, index, scale: int = 1) -> dict:
        """GET /api/image: test image `index`, its reconstruction (its posterior mean decoded), mean and label."""
        row, scale = self.row(index), check_scale(scale)
        mu = self.mu[row]
        original = self.images[row].float() / 255
        return {"index": index, "image": data_url(image_png(original, scale)),
                "reconstruction": data_url(image_png(self.pictures(mu[None])[0], scale)),
                "mu": [float(v) for v in mu], "point": [float(v) for v in self.map.points[row]],
                "label": None if self.labels is None else int(self.labels[row])}

    def nearest(self, mu: torch.Tensor, k: int = NEAREST) -> tuple[torch.Tensor, torch.Tensor]:
        """The map rows of the `k` test images whose posterior means lie nearest `mu` (D,), and the distances."""
        return nearest_rows(self.mu, mu, k)

    def encode(self, data: bytes, invert: str = "off", scale: int = 1) -> dict:
        """POST /api/encode: an uploaded PNG or JPEG prepared as the run's own images (`data.preparation`:
        its size, channels and, with `invert`, polarity), its posterior, its anomaly score by the run's detector
        (its calibrated score and threshold, else the negative ELBO without one), its reconstruction, its place
        on the map and its nearest test images."""
        from ..data import ImageSet
        from ..data.preparation import prepare

        if invert not in INVERT_MODES:
            raise Refused(f"invert must be one of {', '.join(INVERT_MODES)}, got {short(invert)}")
        scale = check_scale(scale)
        pixels, alpha, frames = read_upload(data)
        prepared = prepare(ImageSet(pixels, None, "the upload"), self.run.preparation(invert))
        animated = f"it is animated ({frames} frames): its first frame was read" if frames > 1 else None
        notes = [note for note in (prepared.note(), "its alpha channel was dropped" if alpha else None, animated)
                 if note]
        with torch.no_grad(), self.lock:
            posterior = self.model.encode(self.run.inputs(prepared.images, for_latents=True))
            verdict = self.detector.score(self.run.inputs(prepared.images))
            mu, logvar = posterior.mu[0].float().cpu(), posterior.logvar[0].float().cpu()
        rows, _ = self.nearest(mu)  # the map's nearest point places the upload on the map
        near = self.neighbours
        near_rows, near_distances = nearest_rows(near.mu, mu, NEAREST)
        score = float(verdict.scores[0])
        return {
            "mu": [float(v) for v in mu], "logvar": [float(v) for v in logvar],
            "score": score if math.isfinite(score) else None, "score_method": self.detector.method,
            "anomaly": None if verdict.anomaly is None else bool(verdict.anomaly[0]),
            "threshold": verdict.threshold, "point": self.map.place(mu.double().numpy(), int(rows[0])),
            "reconstruction": data_url(image_png(self.pictures(mu[None])[0], scale)),
            "input": data_url(image_png(prepared.images.images[0].float() / 255, scale)),
            "nearest": [{"split": near.split, "index": int(near.indices[r]), "distance": round(float(d), 6),
                         "mu": [float(v) for v in near.mu[r]],
                         "image": data_url(image_png(near.images[r].float() / 255, scale))}
                        for r, d in zip(near_rows.tolist(), near_distances.tolist())],
            "note": "; ".join(notes + ([self.neighbours_note] if self.neighbours_note else [])) or None,
        }

    def samples(self, count: int = 16, seed: int = 0, sampler: str = "prior", scale: int = 1) -> list[str]:
        """GET /api/samples: `count` images drawn from the prior or a fitted sampler, seeded."""
        from ..generate import sample
        from ..samplers import SAMPLERS

        check_count(count, "count", MAX_SAMPLES)
        check_count(seed, "seed", MAX_SEED, least=0)
        scale = check_scale(scale)
        if sampler not in SAMPLERS:
            raise Refused(f"unknown sampler {short(sampler)}; choose one of {', '.join(SAMPLERS.names())}")
        if reason := self.model.unsupported("sample"):
            raise Refused(reason)
        with torch.no_grad(), self.lock:
            chosen = None if sampler == "prior" else self._sampler(sampler)
            images = sample(self.model, count, make_generator(seed, self.device), chosen).float().cpu()
        return [data_url(image_png(image.clamp(0, 1), scale)) for image in images]

    def _sampler(self, name: str):
        from ..errors import RunError
        from ..samplers.store import load_sampler

        if name not in self._samplers:
            try:
                self._samplers[name] = load_sampler(self.run, name)
            except RunError as e:
                raise Refused(str(e), 404) from None
        return self._samplers[name]

    def interpolate(self, a, b, steps: int = 9, method: str = "linear", scale: int = 1) -> dict:
        """POST /api/interpolate: `steps` images on the path between two ends, each {"index": I} (a test image's
        posterior mean) or {"z": [D numbers]}, linear or slerp (`generate.slerp`), ends included."""
        from ..generate import slerp

        check_count(steps, "steps", MAX_STEPS, least=2)
        scale = check_scale(scale)
        if method not in INTERPOLATIONS:
            raise Refused(f"method must be one of {', '.join(INTERPOLATIONS)}, got {short(method)}")
        ends = torch.stack([self._end(a, "a"), self._end(b, "b")])
        t = torch.linspace(0, 1, steps, dtype=torch.float64)
        # slerp of the zero vector (the prior's centre) has no arc: generate.slerp is linear there
        z = slerp(ends[0], ends[1], t) if method == "slerp" else torch.lerp(ends[0], ends[1], t[:, None])
        # decoded as they are: the ends were checked, and a slerp's points may pass the bound where the ends do not
        images = [data_url(image_png(image, scale)) for image in self.pictures(z)]
        return {"images": images, "z": z.tolist()}

    def _end(self, end, name: str) -> torch.Tensor:
        if not isinstance(end, dict) or len(end) != 1 or not ({"index", "z"} & end.keys()):
            raise Refused(f"{name} must be {{\"index\": I}} or {{\"z\": [{self.latent_dim} numbers]}}, "
                          f"got {short(end)}")
        if "index" in end:
            return self.mu[self.row(end["index"])].double()
        return torch.from_numpy(check_rows([end["z"]], self.latent_dim, f"{name}.z")[0])


class Explorer:
    """The runs one explorer serves, by unique name."""

    def __init__(self, runs: Sequence[ExploredRun]):
        if not runs:
            raise ConfigError("explore needs at least one run")
        self.runs = {run.name: run for run in runs}
        if len(self.runs) != len(runs):
            raise ConfigError("two explored runs have the same name")

    @classmethod
    def open(cls, sources: Sequence[str | Path], *, device: torch.device | str = "cpu",
             map_method: str = "pca", map_points: int = 10_000, data_dir: str | Path | None = None,
             log=None, progress: bool = False) -> Explorer:
        """Load each run (`runs.load_run`: a run directory, or a name it resolves) and prepare its map.
        `log`: called with each run's name as it is prepared; `progress`: a bar on stderr while it encodes."""
        runs = []
        for name, source in zip(unique_names(sources), sources):
            if log:
                log(name)
            runs.append(ExploredRun(name, load_run(source, device), map_method=map_method, map_points=map_points,
                                    data_dir=data_dir, progress=progress))
        return cls(runs)

    def get(self, name) -> ExploredRun:
        """The run called `name`; Refused (404) naming the runs there are."""
        if isinstance(name, str) and name in self.runs:
            return self.runs[name]
        raise Refused(f"no run {short(name)} is explored here; the runs are {', '.join(self.runs)}", 404)

    def describe(self) -> dict:
        return {"runs": [run.describe() for run in self.runs.values()]}


def unique_names(sources: Sequence[str | Path]) -> list[str]:
    """The name of each run as the API calls it: a directory's base name, or a name like pretrained:mnist as
    given, with -2, -3, ... added to later repeats."""
    names, taken = [], set()
    for source in sources:
        text = str(source)
        base = text if ":" in text and not Path(text).exists() else (Path(text).resolve().name or text)
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        names.append(name)
    return names
