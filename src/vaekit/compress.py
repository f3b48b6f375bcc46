"""Lossless compression of binary images with bits-back coding (BB-ANS, Townsend, Bird & Barber 2019).

A trained VAE turns each image x into a message of about -ELBO(x) bits on an ANS stack (the
`constriction` library's AnsCoder), a last-in-first-out entropy coder:

    compress image x:    pop z ~ q(z|x)        (take back bits already on the stack)
                         push x with p(x|z)    (Bernoulli pixels; with pixel groups, group by group,
                                                the last group first, each given z and the groups before it)
                         push z with p(z)
    decompress:          the same three steps mirrored, in reverse image order.

The net cost of an image is -log p(x|z) - log p(z) + log q(z|x): its negative ELBO in bits, up to
the discretization of z. Each latent dimension is cut into 2**precision bins of equal mass under
the prior N(0, 1), so the prior is uniform over bins and z decodes at the bin's median. The stack
starts with a few seeded random words, which the first image pops; over a dataset they cost a
fraction of a bit per image.

Encoder and decoder must compute bit-identical probabilities. Both evaluate the networks one image at
a time, in float64, on the same inputs, so no probability depends on a batch size; tests check
that the bytes do not depend on the batch and that every image round-trips.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from .distributed import PeerFailed, World
from .errors import ConfigError, DataError
from .models import VAE, model_fingerprint
from .models.context import SCHEMES
from .validation import parse_int

MAGIC = b"VAEKITBB"
# 2: a SHA-256 of every byte before it ends the file; initial_words in the header. 3: several shards (one per
# process of a distributed compress), each its own ANS stack; one shard is still written as format 2. 4: 8-bit
# images (vaekit.compress_8bit), `pixel_bits` 8 in the header and always `shards` (1 or more); binary images are
# still written as format 2 or 3, byte for byte as before.
FORMAT_VERSION = 4
READS_VERSIONS = (1, 2, 3, 4)
DIGEST_BYTES = 32
MAX_HEADER_BYTES = 1 << 16  # a real header is under 1 KB
DEFAULT_PRECISION = 8  # bits per latent dimension: 256 bins
INITIAL_WORDS_SEED = 20190214  # the seed of the stack's initial random words (BB-ANS's arXiv date)
MAX_SHARDS = 512  # a format-3 header lists every shard (about 60 bytes each) within MAX_HEADER_BYTES


def require_codable(model) -> None:
    """ConfigError unless the model can drive bits-back coding of binary or 8-bit images (its family says, by
    `unsupported("compress")`)."""
    model.require("compress")


def pixel_bits(model) -> int:
    """The bits of the pixel values a codable model's likelihood codes: 1 (binary) or 8 (discretized, 0..255)."""
    return 1 if model.likelihood.binary else 8


def coder_for(model, precision: int = DEFAULT_PRECISION) -> BitsBackCoder:
    """The bits-back coder of a codable model: BitsBackCoder for binary images, EightBitCoder for 8-bit ones."""
    require_codable(model)
    if pixel_bits(model) == 8:
        from .compress_8bit import EightBitCoder

        return EightBitCoder(model, precision)
    return BitsBackCoder(model, precision)


@dataclass
class BitsBackCoder:
    """Bits-back coding of flattened binary images (N, C*H*W) of 0s and 1s with a trained VAE."""

    model: VAE
    precision: int = DEFAULT_PRECISION
    PIXEL_BITS = 1  # the pixels this coder codes (vaekit.compress_8bit.EightBitCoder: 8)

    def __post_init__(self) -> None:
        require_codable(self.model)
        if pixel_bits(self.model) != self.PIXEL_BITS:
            raise ConfigError(f"{type(self).__name__} codes {self.PIXEL_BITS}-bit pixels; this model's likelihood, "
                              f"{self.model.likelihood.name}, gives {pixel_bits(self.model)}-bit ones (see coder_for)")
        if not 1 <= self.precision <= 16:
            raise ConfigError(f"latent precision must be 1 to 16 bits, got {self.precision}")
        import constriction  # an optional dependency until here

        self._stack = constriction.stream.stack
        self._models = constriction.stream.model
        self.net = _float64_copy(self.model)
        bins = 2 ** self.precision
        quantiles = torch.arange(1, bins, dtype=torch.float64) / bins
        inner = torch.special.ndtri(quantiles)  # bin edges of equal prior mass
        infinity = torch.tensor([math.inf], dtype=torch.float64)
        self.edges = torch.cat([-infinity, inner, infinity])
        self.centers = torch.special.ndtri((torch.arange(bins, dtype=torch.float64) + 0.5) / bins)
        self.uniform = self._models.Uniform(bins)
        self.categorical = self._models.Categorical(perfect=False)
        self.bernoulli = self._models.Bernoulli(perfect=False)
        self.latent_dim = self.model.latent_dim
        self.shape = self.model.config.input_shape
        self.lattices = SCHEMES[self.model.config.pixel_groups]  # (stride, row, col), in decoding order

    def base_initial_words(self) -> int:
        """How many initial words the first image's posterior draw needs: D bins of `precision` bits, and 2 more."""
        return math.ceil(self.latent_dim * self.precision / 32) + 2

    def initial_words(self, count: int | None = None, shard: int = 0) -> np.ndarray:
        """Seeded random words the first image's posterior draw pops (`base_initial_words` unless more are asked);
        shard k of a format-3 file starts from its own, a function of k alone (shard 0's are format 2's)."""
        count = self.base_initial_words() if count is None else count
        seed = INITIAL_WORDS_SEED if shard == 0 else (INITIAL_WORDS_SEED, shard)
        return np.random.default_rng(seed).integers(0, 2**32, size=count, dtype=np.uint32)

    @torch.no_grad()
    def posterior_probs(self, image: np.ndarray) -> np.ndarray:
        """q(bin | x) for each latent dimension, (D, bins) float64, from one flattened binary image."""
        x = torch.from_numpy(image.astype(np.float64)).view(1, *self.shape)
        posterior = self.net.encode(x)
        mu, std = posterior.mu[0, :, None], posterior.std[0, :, None]
        cdf = torch.special.ndtr((self.edges[None, :] - mu) / std)  # (D, bins + 1)
        return (cdf[:, 1:] - cdf[:, :-1]).clamp(min=0).numpy()

    @torch.no_grad()
    def decoder_logits(self, bins: np.ndarray) -> torch.Tensor:
        """The decoder's output (1, C', H, W) float64 for z at the bins' medians (before any pixel context):
        its logits, and with model.context_features the features it passes to the context."""
        return self.net.decoder(self.centers[torch.from_numpy(bins.astype(np.int64))][None])

    @torch.no_grad()
    def group_probs(self, k: int, logits: torch.Tensor, known: torch.Tensor) -> np.ndarray:
        """p(x_i = 1 | z, earlier groups) for the pixels of group k, flattened, float64; `known` (1, C, H, W)
        holds the earlier groups' pixels and 0 elsewhere."""
        stride, row, col = self.lattices[k]
        group = (self.net.context.group_logits(k, logits, known) if self.net.config.pixel_groups > 1 else
                 logits[..., row::stride, col::stride])
        return torch.sigmoid(group).reshape(-1).numpy()

    def encode(self, images: np.ndarray, initial_words: int | None = None, shard: int = 0) -> np.ndarray:
        """Compress images (N, C*H*W) into ANS words (uint32): per image, pop z from the posterior (bits back),
        push the pixels given z (`push_pixels`), push z with the prior."""
        coder = self._stack.AnsCoder(self.initial_words(initial_words, shard))
        for image in images:
            z = coder.decode(self.categorical, self.posterior_probs(image))  # pop: bits back
            self.push_pixels(coder, image, z)
            coder.encode_reverse(z.astype(np.int32), self.uniform)
        return coder.get_compressed()

    def decode(self, words: np.ndarray, count: int, initial_words: int | None = None, shard: int = 0) -> np.ndarray:
        """Decompress `count` images (count, C*H*W) from ANS words; checks the initial words come back."""
        coder = self._stack.AnsCoder(words)
        images = np.empty((count, math.prod(self.shape)), dtype=np.uint8)
        for i in reversed(range(count)):
            z = coder.decode(self.uniform, self.latent_dim)
            image = self.pop_pixels(coder, z)
            coder.encode_reverse(z.astype(np.int32), self.categorical, self.posterior_probs(image))  # bits back
            images[i] = image
        left = coder.get_compressed()
        if not np.array_equal(left, self.initial_words(initial_words, shard)):
            raise DataError("decoding did not end on the initial bits: "
                            "the file does not match this model or is corrupt")
        return images

    def push_pixels(self, coder, image: np.ndarray, z: np.ndarray) -> None:
        """Push a binary image's (C*H*W,) pixels of 0/1 given the latent bins z, group by group."""
        logits = self.decoder_logits(z)
        full = torch.from_numpy(image.astype(np.float64)).view(1, *self.shape)
        known, groups = torch.zeros_like(full), []
        for k, (stride, row, col) in enumerate(self.lattices):
            symbols = full[..., row::stride, col::stride]
            groups.append((symbols.reshape(-1).numpy().astype(np.int32), self.group_probs(k, logits, known)))
            known[..., row::stride, col::stride] = symbols
        for symbols, probs in reversed(groups):  # a stack: the decoder pops group 0 first
            coder.encode_reverse(symbols, self.bernoulli, probs)

    def pop_pixels(self, coder, z: np.ndarray) -> np.ndarray:
        """Pop a binary image (C*H*W,) uint8 given the latent bins z: `push_pixels` undone."""
        logits = self.decoder_logits(z)
        known = torch.zeros(1, *self.shape, dtype=logits.dtype)
        for k, (stride, row, col) in enumerate(self.lattices):
            symbols = coder.decode(self.bernoulli, self.group_probs(k, logits, known))
            known[..., row::stride, col::stride] = torch.from_numpy(symbols.astype(np.float64)).view_as(
                known[..., row::stride, col::stride])
        return known.reshape(-1).numpy().astype(np.uint8)


def _float64_copy(model: VAE) -> VAE:
    return copy.deepcopy(model).double().eval()


# --- the file format -------------------------------------------------------------------------------
#
#   8 bytes   magic b"VAEKITBB"
#   4 bytes   header length L, uint32 little-endian
#   L bytes   header, UTF-8 JSON: format_version, model_fingerprint, precision, count, shape (C, H, W),
#             layout (how to write the images back out), initial_words, payload_bytes, payload_sha256,
#             images_sha256; format 3 has instead of initial_words `shards`, a list of 2 to MAX_SHARDS objects
#             {count, initial_words, payload_bytes}, one per ANS stack, in image order; format 4 (8-bit
#             images) has `shards` (1 to MAX_SHARDS of them) and `pixel_bits` 8
#   P bytes   payload: the ANS words, uint32 little-endian (format 3: the shards' words one after another)
#   32 bytes  SHA-256 of every byte before it (format 2 and 3; format 1 files end with the payload)
#
# Every header field is checked (type, range, allow-list) before it is used, and the image count
# against the payload: each image costs at least one bit of payload (`encode_shard` pads the stack's
# initial words in the rare case it would not), so a small file cannot claim millions of images; in
# format 3 this holds for every shard, and the shards' counts and lengths must add up to the file's.

HEADER_KEYS = {1: {"format_version", "model_fingerprint", "precision", "count", "shape", "layout", "images_sha256",
                   "payload_bytes", "payload_sha256"}}
HEADER_KEYS[2] = HEADER_KEYS[1] | {"initial_words"}
HEADER_KEYS[3] = HEADER_KEYS[1] | {"shards"}
HEADER_KEYS[4] = HEADER_KEYS[3] | {"pixel_bits"}
SHARD_KEYS = {"count", "initial_words", "payload_bytes"}
LAYOUT_KEYS = {"container", "shape", "dtype", "one"}
CONTAINERS = ("idx", "npy")
# the dtypes compress accepts (bool, integers, floats up to 64 bits), in either byte order
ACCEPTED_DTYPES = frozenset(np.dtype(code).newbyteorder(order).str for code in "?bBhHiIlLqQefd" for order in "<>")
IDX_DTYPES = frozenset(np.dtype(code).newbyteorder(order).str for code in "bBhifd" for order in "<>")
MAX_DIMS = 32


def pack(words: np.ndarray, header: dict) -> bytes:
    """The file bytes for ANS `words` and a header (payload length and checksums are added here): format 2, or
    format 3 when the header lists `shards` (their words one after another in `words`), or format 4 when it
    gives `pixel_bits` (8-bit images)."""
    payload = words.astype("<u4").tobytes()
    version = 4 if "pixel_bits" in header else 3 if "shards" in header else 2
    header = {"format_version": version, **header, "payload_bytes": len(payload),
              "payload_sha256": hashlib.sha256(payload).hexdigest()}
    encoded = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + len(encoded).to_bytes(4, "little") + encoded + payload
    return body + hashlib.sha256(body).digest()


def unpack(data: bytes, source: str) -> tuple[dict, np.ndarray]:
    """Checked header and ANS words of a compressed file; DataError for anything truncated, corrupt or too new."""
    if not data.startswith(MAGIC):
        raise DataError(f"{source}: not a vaekit compressed file (bad magic number)")
    if len(data) < len(MAGIC) + 4:
        raise DataError(f"{source}: truncated (no header)")
    length = int.from_bytes(data[8:12], "little")
    if length > MAX_HEADER_BYTES or 12 + length > len(data):
        raise DataError(f"{source}: corrupt or truncated header (it claims {length} bytes)")
    header = _parse_header(data[12:12 + length], source)
    version = header.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise DataError(f"{source}: compressed-file format {version} is newer than this vaekit's {FORMAT_VERSION}")
    if type(version) is not int or version not in READS_VERSIONS:
        raise DataError(f"{source}: corrupt header (format_version {version!r} is not one of {READS_VERSIONS})")
    end = len(data)
    if version >= 2:
        end -= DIGEST_BYTES
        if end < 12 + length or hashlib.sha256(data[:end]).digest() != data[end:]:
            raise DataError(f"{source}: corrupt or truncated (the file's SHA-256 does not match its content)")
    check_header(header, version, source)
    payload = data[12 + length:end]
    if len(payload) != header["payload_bytes"]:
        raise DataError(f"{source}: truncated: the payload has {len(payload)} of {header['payload_bytes']} bytes")
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise DataError(f"{source}: the payload is corrupt (checksum mismatch)")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    if header["count"] > 32 * words.size:  # every image costs at least a bit (see above)
        raise DataError(f"{source}: corrupt header: it claims {header['count']} images, but its payload of "
                        f"{len(payload)} bytes holds at most {32 * words.size}")
    if header.get("initial_words", 0) > words.size:
        raise DataError(f"{source}: corrupt header: {header['initial_words']} initial words in a payload of "
                        f"{words.size}")
    if version >= 3:
        check_shards(header, source)
    return header, words


def check_shards(header: dict, source: str) -> None:
    """DataError unless a format-3 header's shards add up to its count and payload, and each holds at least a
    bit per image and its initial words (its fields' types were checked by check_header)."""
    shards = header["shards"]
    total = sum(shard["count"] for shard in shards)
    if total != header["count"]:
        raise DataError(f"{source}: corrupt header: its {len(shards)} shards hold {total} images, but it claims "
                        f"{header['count']}")
    length = sum(shard["payload_bytes"] for shard in shards)
    if length != header["payload_bytes"]:
        raise DataError(f"{source}: corrupt header: its {len(shards)} shards' payloads add up to {length} bytes, "
                        f"but the payload has {header['payload_bytes']}")
    for k, shard in enumerate(shards):
        words = shard["payload_bytes"] // 4
        if shard["count"] > 32 * words or shard["initial_words"] > words:
            raise DataError(f"{source}: corrupt header: shard {k} claims {shard['count']} images and "
                            f"{shard['initial_words']} initial words in a payload of {words} words")


def shard_words(header: dict, words: np.ndarray) -> list[tuple[int, int | None, np.ndarray]]:
    """Each shard's (count, initial_words, ANS words) of a checked file, in image order: one for format 1 and 2
    (its initial_words None in format 1, which did not record them)."""
    if header["format_version"] < 3:
        return [(header["count"], header.get("initial_words"), words)]
    parts, start = [], 0
    for shard in header["shards"]:
        stop = start + shard["payload_bytes"] // 4
        parts.append((shard["count"], shard["initial_words"], words[start:stop]))
        start = stop
    return parts


def _parse_header(raw: bytes, source: str) -> dict:
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("a key appears twice")
        return dict(pairs)

    def no_constants(name):
        raise ValueError(f"{name} is not a number")

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants,
                            parse_int=parse_int)
    except (ValueError, RecursionError):
        raise DataError(f"{source}: corrupt or truncated header") from None
    if not isinstance(header, dict):
        raise DataError(f"{source}: corrupt or truncated header (not a JSON object)")
    return header


def check_header(header: dict, version: int, source: str) -> None:
    """DataError naming the first header field of the wrong type, out of range or unknown."""

    def bad(field: str, expected: str):
        value = repr(header.get(field) if "." not in field else layout.get(field.split(".")[1]))
        raise DataError(f"{source}: corrupt header: {field} must be {expected}, found {value[:60]}")

    keys = set(header)
    if keys != HEADER_KEYS[version]:
        wrong = sorted(keys ^ HEADER_KEYS[version])
        raise DataError(f"{source}: corrupt header: fields {', '.join(map(str, wrong))} missing or unknown")
    layout = header["layout"] if isinstance(header["layout"], dict) else {}
    if set(layout) != LAYOUT_KEYS:
        bad("layout", f"an object with keys {', '.join(sorted(LAYOUT_KEYS))}")
    for field in ("model_fingerprint", "payload_sha256", "images_sha256"):
        if not _is_hex_digest(header[field]):
            bad(field, "64 hex digits")
    if not _is_int(header["precision"], 1, 16):
        bad("precision", "an integer from 1 to 16")
    if not _is_int(header["count"], 1, 2**40):
        bad("count", "a positive integer")
    if not _is_int(header["payload_bytes"], 0, 2**48) or header["payload_bytes"] % 4:
        bad("payload_bytes", "a multiple of 4")
    if version == 2 and not _is_int(header["initial_words"], 1, 2**40):
        bad("initial_words", "a positive integer")
    if version >= 4 and header["pixel_bits"] != 8:
        bad("pixel_bits", "8")
    if version >= 3:
        shards, fewest = header["shards"], 1 if version >= 4 else 2
        if not (isinstance(shards, list) and fewest <= len(shards) <= MAX_SHARDS and all(
                isinstance(shard, dict) and set(shard) == SHARD_KEYS and _is_int(shard["count"], 1, 2**40)
                and _is_int(shard["initial_words"], 1, 2**40) and _is_int(shard["payload_bytes"], 4, 2**48)
                and shard["payload_bytes"] % 4 == 0 for shard in shards)):
            bad("shards", f"{fewest} to {MAX_SHARDS} objects of a positive count, initial_words and payload_bytes "
                "(a multiple of 4)")
    shape = header["shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(n, 1, 2**16) for n in shape)):
        bad("shape", "3 positive integers (C, H, W)")
    if layout["container"] not in CONTAINERS:
        bad("layout.container", " or ".join(CONTAINERS))
    dtype = layout["dtype"]
    if not isinstance(dtype, str) or dtype not in (IDX_DTYPES if layout["container"] == "idx" else ACCEPTED_DTYPES):
        bad("layout.dtype", f"a dtype {layout['container']} stores as bool, integers or floats")
    out_shape = layout["shape"]
    if not (isinstance(out_shape, list) and 2 <= len(out_shape) <= MAX_DIMS
            and all(_is_int(n, 1, 2**40) for n in out_shape)
            and out_shape[0] == header["count"] and math.prod(out_shape[1:]) == math.prod(shape)):
        bad("layout.shape", f"{header['count']} images of {math.prod(shape)} pixels")
    if exact_one(layout["one"], np.dtype(dtype)) is None:
        bad("layout.one", f"a nonzero value {np.dtype(dtype).name} holds exactly")
    if version >= 4 and layout["one"] != eight_bit_one(np.dtype(dtype)):
        bad("layout.one", f"{eight_bit_one(np.dtype(dtype))!r}, the value of 255 in {np.dtype(dtype).name}")


def eight_bit_one(dtype: np.dtype) -> int | float | bool:
    """The value of the 8-bit value 255 in an array of `dtype` (vaekit.compress_8bit.eight_bit_values)."""
    return True if dtype.kind == "b" else 255 if dtype.kind in "iu" else 1.0


def _is_int(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_hex_digest(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def exact_one(value, dtype: np.dtype) -> np.ndarray | None:
    """`value` as a 0-d array of `dtype` if it is nonzero and the dtype holds it exactly, else None."""
    if type(value) not in (bool, int, float) or (dtype.kind == "b") != (type(value) is bool):
        return None
    if dtype.kind in "iu" and type(value) is not int:
        return None
    if dtype.kind == "f" and not math.isfinite(value):
        return None
    if dtype.kind in "iu" and not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
        return None
    with np.errstate(over="ignore"):
        one = np.array(value, dtype=dtype)
    return one if one.item() == value and value != 0 else None


def images_digest(bits: np.ndarray) -> str:
    """SHA-256 of the coded pixel values as bytes (0/1, or 0..255 for 8-bit images): checks a decompression is
    exact."""
    return hashlib.sha256(np.ascontiguousarray(bits, dtype=np.uint8).tobytes()).hexdigest()


# --- arrays in, bytes out, and back ----------------------------------------------------------------

ACCEPTED = "bool, integer or float arrays (up to 64 bits) with finite values"


def require_restorable(array: np.ndarray, source: str) -> None:
    """DataError unless compress can give this array back exactly: what ACCEPTED says."""
    dtype = array.dtype
    if dtype.str not in ACCEPTED_DTYPES:
        raise DataError(f"{source}: compress takes {ACCEPTED}; got dtype {dtype} ({dtype.str}), which it could not "
                        "restore exactly")
    if dtype.kind == "f":
        if not np.isfinite(array).all():
            raise DataError(f"{source}: compress takes {ACCEPTED}; this array holds NaN or infinite values")
        if np.signbit(array[array == 0]).any():
            raise DataError(f"{source}: compress takes {ACCEPTED}; this array holds negative zeros (-0.0), "
                            "which would come back as 0.0")


def binary_bits(array: np.ndarray, rule: str, seed: int, source: str) -> tuple[np.ndarray, float | int | bool, bool]:
    """The 0/1 pixels to code, the value a 1 had in the input, and whether the input was already binary.

    An input whose values are only 0 and one other value round-trips exactly. Anything else (grayscale) is
    binarized by the run's rule (`threshold`, or a seeded `dynamic` draw; `none` means threshold), and
    it is that binarization that round-trips.
    """
    if array.size == 0:
        raise DataError(f"{source}: no images to compress")
    require_restorable(array, source)
    values = np.unique(array)
    nonzero = values[values != 0]
    if len(nonzero) <= 1:
        one = nonzero[0].item() if len(nonzero) else (True if array.dtype == np.bool_ else 1)
        return (array != 0).astype(np.uint8), one, True
    if array.dtype.kind == "f" and (values.min() < 0 or values.max() > 1):
        raise DataError(f"{source}: float images must be in [0, 1] to be binarized")
    if array.dtype.kind in "iu" and (values.min() < 0 or values.max() > 255 or exact_one(255, array.dtype) is None):
        raise DataError(f"{source}: grayscale integer images must be in [0, 255], in a dtype that holds 255, to be "
                        f"binarized; got {array.dtype} from {values.min()} to {values.max()}")
    scaled = array.astype(np.float64) / (255.0 if array.dtype.kind in "iu" else 1.0)
    if rule == "dynamic":
        bits = np.random.default_rng(seed).random(scaled.shape) < scaled
    else:
        bits = scaled > 127.5 / 255.0
    one = 255 if array.dtype.kind in "iu" else 1.0
    return bits.astype(np.uint8), one, False


def compress_images(model: VAE, array: np.ndarray, container: str, rule: str, seed: int,
                    precision: int = DEFAULT_PRECISION, source: str = "<images>", shards: int = 1,
                    world: World | None = None) -> tuple[bytes, dict]:
    """Compress an array of images (N, ...) holding N images of the model's size; returns file bytes and stats.

    A run on a Bernoulli likelihood codes binary images (`binary_bits`: grayscale is binarized by `rule`), one
    on a discretized likelihood 8-bit values exactly (vaekit.compress_8bit.eight_bit_values, format 4).
    `shards` > 1 cuts the images into that many contiguous shards (`World.split`, at most one per image), each
    coded on its own ANS stack (format 3); one shard is format 2. With a distributed `world` there is one shard
    per process: each process codes its own and every process gets the file's bytes, the same as one process
    gets with `shards` the number of processes.
    """
    require_codable(model)
    pixels = math.prod(model.config.input_shape)
    if array.ndim < 2 or math.prod(array.shape[1:]) != pixels:
        raise DataError(f"{source}: images of shape {tuple(array.shape[1:])} do not match the model's "
                        f"{model.config.input_shape} ({pixels} pixels); bits-back coding cannot resize losslessly")
    if array.ndim > MAX_DIMS:
        raise DataError(f"{source}: arrays of more than {MAX_DIMS} dimensions are not supported")
    world = world or World()
    if world.distributed:
        shards = world.size
    if not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(f"compress writes 1 to {MAX_SHARDS} shards (one per process), not {shards}")
    depth = pixel_bits(model)
    if depth == 8:
        from .compress_8bit import eight_bit_values

        (bits, one), exact = eight_bit_values(array, source), True
    else:
        bits, one, exact = binary_bits(array, rule, seed, source)
    flat = bits.reshape(len(bits), pixels)
    coder = coder_for(model, precision)
    shards = min(shards, len(flat))
    cuts = [World(k, shards).split(len(flat)) for k in range(shards)]
    mine = ([world.rank] if world.rank < shards else []) if world.distributed else range(shards)
    coded = gather_shards(world, [encode_shard(coder, flat[cuts[k]], k) for k in mine])
    header = {"model_fingerprint": model_fingerprint(model), "precision": precision, "count": len(flat),
              "shape": list(model.config.input_shape),
              "layout": {"container": container, "shape": list(array.shape), "dtype": array.dtype.str, "one": one},
              "images_sha256": images_digest(flat)}
    if depth == 8:
        header["pixel_bits"] = depth
    if shards == 1 and depth == 1:
        header["initial_words"] = coded[0][1]
    else:
        header["shards"] = [{"count": cut.stop - cut.start, "initial_words": initial, "payload_bytes": 4 * words.size}
                            for cut, (words, initial) in zip(cuts, coded)]
    words = np.concatenate([words for words, _ in coded])
    data = pack(words, header)
    stats = {"images": len(flat), "bytes": len(data), "bits_per_pixel": 8 * len(data) / flat.size,
             "payload_bits_per_pixel": 32 * words.size / flat.size, "exact": exact, "pixel_bits": depth}
    return data, stats


def encode_shard(coder: BitsBackCoder, flat: np.ndarray, shard: int) -> tuple[np.ndarray, int]:
    """The ANS words of one shard's images (n, C*H*W), and how many initial words its stack started with: the
    base count, or more when the images would cost less than a bit each (see unpack)."""
    initial = coder.base_initial_words()
    words = coder.encode(flat, initial, shard)
    while 32 * words.size < len(flat):  # keep the file's promise of at least a bit per image (see unpack)
        initial += math.ceil(len(flat) / 32) - words.size
        words = coder.encode(flat, initial, shard)
    return words, initial


def gather_shards(world: World, coded: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, int]]:
    """Every process's coded shards (at most one each when distributed), in rank order, on every process."""
    if not world.distributed:
        return coded
    words = torch.from_numpy(np.concatenate([w for w, _ in coded] or [np.empty(0, np.uint32)]).view(np.int32))
    sizes = torch.tensor([[initial, w.size] for w, initial in coded], dtype=torch.long).view(-1, 2)
    words, sizes = world.gather(words).numpy().view(np.uint32), world.gather(sizes).tolist()
    ends = np.cumsum([size for _, size in sizes]).tolist()
    return [(words[end - size:end], initial) for (initial, size), end in zip(sizes, ends)]


def decompress_images(model: VAE, data: bytes, source: str = "<file>",
                      world: World | None = None) -> tuple[np.ndarray, str]:
    """The images of a compressed file, in their original layout and dtype, and their container (idx or npy).
    With a distributed `world`, each process decodes its share of a format-3 file's shards (`World.split`) and
    every process gets all the images."""
    header, words = unpack(data, source)
    fingerprint, precision = header["model_fingerprint"], header["precision"]
    layout, digest = header["layout"], header["images_sha256"]
    if fingerprint != model_fingerprint(model):
        raise DataError(f"{source} was compressed with another model (fingerprint {fingerprint[:12]}...); "
                        f"this run's is {model_fingerprint(model)[:12]}...; decompress it with the run that made it")
    if tuple(header["shape"]) != tuple(model.config.input_shape):
        raise DataError(f"{source}: corrupt header: images of shape {tuple(header['shape'])}, but the model that "
                        f"made it takes {tuple(model.config.input_shape)}")
    depth = header.get("pixel_bits", 1)
    require_codable(model)
    if depth != pixel_bits(model):
        raise DataError(f"{source}: corrupt header: it holds {depth}-bit images, but the model that made it codes "
                        f"{pixel_bits(model)}-bit ones")
    coder = coder_for(model, precision)
    parts = shard_words(header, words)
    for initial in (initial for _, initial, _ in parts if initial is not None):
        if initial < coder.base_initial_words():
            raise DataError(f"{source}: corrupt header: initial_words {initial} is below the "
                            f"{coder.base_initial_words()} this model needs")
    world = world or World()
    error, decoded, mine = None, [], world.split(len(parts))
    for k in range(mine.start, mine.stop):
        n, initial, words = parts[k]
        try:
            decoded.append(coder.decode(words, n, initial, shard=k))
        except DataError as e:  # the processes agree on a failure before they meet to gather
            error = DataError(f"{source}{f' (shard {k + 1} of {len(parts)})' if len(parts) > 1 else ''}: {e}")
            break
    if not world.all(torch.tensor(error is None)):
        raise error or PeerFailed("another process of the job could not decode its shards (it says why)",
                                  DataError.exit_code)
    pixels = math.prod(header["shape"])
    bits = world.gather(torch.from_numpy(np.concatenate(decoded or [np.empty((0, pixels), np.uint8)]))).numpy()
    if images_digest(bits) != digest:
        raise DataError(f"{source}: the decoded images fail their checksum (a different platform or torch build "
                        "computed different probabilities); nothing was written")
    dtype = np.dtype(layout["dtype"])
    if depth == 8:
        from .compress_8bit import restore_8bit

        return restore_8bit(bits.reshape(layout["shape"]), dtype, layout["one"]), layout["container"]
    images = np.where(bits.reshape(layout["shape"]) != 0, exact_one(layout["one"], dtype), np.zeros((), dtype))
    return images.astype(dtype, copy=False), layout["container"]
