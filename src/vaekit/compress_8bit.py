"""Bits-back coding of 8-bit images (grayscale or colour) with a run trained on a discretized likelihood.

The scheme is vaekit.compress's (BB-ANS, Townsend, Bird & Barber 2019) with 256-way pixels, as Bit-Swap
(Kingma, Abbeel & Ho 2019) and HiLLoC (Townsend et al. 2020) code 8-bit data:

    compress image x:    pop z ~ q(z|x)                  (bits back)
                         push x with p(x|z)              (each value a 256-way categorical; in colour, channel
                                                          c given channels 0..c-1 of the same pixel, the last
                                                          channel first)
                         push z with p(z)

p(x|z) is the run's discretized logistic or logistic mixture (vaekit.likelihoods); a plain logistic is a mixture
of one. In a mixture the channels of a pixel share the component, so channel c is coded with the mixture weights
updated by channels 0..c-1 (Bayes' rule over the components): p(x) = prod_c p(x_c | x_<c), exactly the
likelihood the model was trained with.

Encoder and decoder must hand constriction bit-identical probabilities. The networks run one image at a time in
float64 (as for binary images), and the 256 probabilities of every value come from `logistic_pmf`, in numpy
float64, elementwise and one thread: a value's probabilities do not depend on the other values or images
computed with it (tests check this across batch sizes). constriction then quantizes each row to its 24-bit
fixed-point categorical (`perfect=False`: a deterministic rule, every value at least the smallest probability).
"""

from __future__ import annotations


import numpy as np
import torch

from .compress import BitsBackCoder, exact_one, require_restorable
from .errors import DataError
from .likelihoods import EIGHT_BIT, MAX_LOG_SCALE, MIN_LOG_SCALE

LEVELS = EIGHT_BIT + 1  # 256 values per channel
# the 255 inner bin edges on x's scale, between k and k + 1: (k + 1/2) / 255 (vaekit.likelihoods)
EDGES = (np.arange(EIGHT_BIT, dtype=np.float64) + 0.5) / EIGHT_BIT


CHUNK = 64  # pixels per chunk of `component_cdfs`: K x 255 x 64 float64 values stay in a core's cache


def logistic_cdfs(means: np.ndarray, log_scales: np.ndarray) -> np.ndarray:
    """P(k <= j), j = 0..254, (..., 255) float64, of a logistic(mean, exp(log_scale)) on x's scale discretized into
    the 256 bins of vaekit.likelihoods.discretized_logistic_log_prob (the two at the edges open): its CDF at the
    255 inner bin edges. Elementwise: means and log_scales (...,) contiguous float64 of the same shape, and every
    value is computed by the same instructions wherever it lies in the arrays (tests check this)."""
    inv_scale = np.exp(-np.clip(log_scales, MIN_LOG_SCALE, MAX_LOG_SCALE))
    u = np.subtract(means[..., None], EDGES)
    u *= inv_scale[..., None]
    with np.errstate(over="ignore"):  # exp(u) of a far tail is inf, and 1 / (1 + inf) its CDF of 0
        np.exp(u, out=u)
    u += 1.0
    return np.reciprocal(u, out=u)


def mixture_cdf(weights: np.ndarray, cdfs: np.ndarray) -> np.ndarray:
    """sum_k w_k CDF_k, (P, 255), from weights (P, K) and the components' CDFs (K, P, 255), the components added
    in order (no reduction whose order could depend on the arrays' sizes)."""
    total = weights[:, :1] * cdfs[0]
    for k in range(1, len(cdfs)):
        total += weights[:, k:k + 1] * cdfs[k]
    return total


def value_probs(cdf: np.ndarray) -> np.ndarray:
    """P(k), k = 0..255, (..., 256), from the CDF at the 255 inner edges (..., 255): its differences."""
    shape = cdf.shape[:-1] + (1,)
    return np.diff(cdf, prepend=np.zeros(shape), append=np.ones(shape), axis=-1)


def mixture_cdfs(log_weights: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """The mixture weights (P, K) and each component's CDF at the inner edges (C, K, P, 255), float64, of one image
    from its likelihood's split (log weights (1, K, 1, H, W), means and log-scales (1, K, C, H, W)); P = H W."""
    k, c = means.shape[1], means.shape[2]
    weights = np.ascontiguousarray(log_weights[0, :, 0].exp().reshape(k, -1).T.numpy())  # (P, K)
    means = np.ascontiguousarray(means[0].transpose(0, 1).reshape(c, k, -1).numpy())  # (C, K, P)
    log_scales = np.ascontiguousarray(log_scales[0].transpose(0, 1).reshape(c, k, -1).numpy())
    cdfs = np.empty(means.shape + (EIGHT_BIT,))
    for start in range(0, means.shape[2], CHUNK):
        part = slice(start, start + CHUNK)
        cdfs[:, :, part] = logistic_cdfs(np.ascontiguousarray(means[:, :, part]),
                                         np.ascontiguousarray(log_scales[:, :, part]))
    return weights, cdfs


def channel_probs(weights: np.ndarray, cdfs: np.ndarray) -> np.ndarray:
    """p(x_c = k | z, earlier channels), (P, 256), from the weights (P, K) and the components' CDFs (K, P, 255)."""
    return value_probs(mixture_cdf(weights, cdfs))


def update_weights(weights: np.ndarray, cdfs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The mixture weights (P, K) given one more channel's values (P,): w_k P_k(x_c) / sum_j w_j P_j(x_c); where
    every component gives x_c a probability of 0 in float64 the weights stay as they were (encode and decode
    take the same branch, so the rule only has to be deterministic)."""
    if weights.shape[1] == 1:
        return weights  # one component: nothing to learn
    pixels = np.arange(len(values))
    upper = np.where(values < EIGHT_BIT, cdfs[:, pixels, np.minimum(values, EIGHT_BIT - 1)], 1.0)  # (K, P)
    lower = np.where(values > 0, cdfs[:, pixels, np.maximum(values - 1, 0)], 0.0)
    joint = weights * (upper - lower).T
    total = joint.sum(axis=1, keepdims=True)
    return np.where(total > 0, joint / np.where(total > 0, total, 1.0), weights)


class EightBitCoder(BitsBackCoder):
    """Bits-back coding of flattened 8-bit images (N, C*H*W) of values 0..255 with a VAE on a discretized
    likelihood (the same interface as BitsBackCoder: encode, decode, initial words)."""

    PIXEL_BITS = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        self.channels, height, width = self.shape
        self.values = self._models.Categorical(perfect=False)

    @torch.no_grad()
    def posterior_probs(self, image: np.ndarray) -> np.ndarray:
        """q(bin | x) for each latent dimension, (D, bins) float64, from one flattened 8-bit image (x = k / 255)."""
        return super().posterior_probs(image.astype(np.float64) / EIGHT_BIT)

    @torch.no_grad()
    def components(self, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mixture weights (P, K) and component probabilities (C, P, K, 256) of p(x|z) for z at the bins'
        medians."""
        params = self.net.decode(self.centers[torch.from_numpy(bins.astype(np.int64))][None])
        return mixture_cdfs(*self.net.likelihood.split(params))

    def push_pixels(self, coder, image: np.ndarray, z: np.ndarray) -> None:
        """Push an 8-bit image's (C*H*W,) values given the latent bins z, channel by channel (each channel's
        mixture weights updated by the channels before it, as the likelihood was trained)."""
        weights, cdfs = self.components(z)
        channels = image.reshape(self.channels, -1).astype(np.int64)
        probs = []
        for c in range(self.channels):  # the decoder's order, so that it computes the same numbers
            probs.append(channel_probs(weights, cdfs[c]))
            weights = update_weights(weights, cdfs[c], channels[c])
        for c in reversed(range(self.channels)):  # a stack: the decoder pops channel 0 first
            coder.encode_reverse(channels[c].astype(np.int32), self.values, probs[c])

    def pop_pixels(self, coder, z: np.ndarray) -> np.ndarray:
        """Pop an 8-bit image (C*H*W,) uint8 given the latent bins z: `push_pixels` undone."""
        weights, cdfs = self.components(z)
        channels = np.empty((self.channels, len(weights)), dtype=np.int64)
        for c in range(self.channels):
            channels[c] = coder.decode(self.values, channel_probs(weights, cdfs[c]))
            weights = update_weights(weights, cdfs[c], channels[c])
        return channels.reshape(-1).astype(np.uint8)


# --- arrays in, values out, and back ------------------------------------------------------------------

EIGHT_BIT_ACCEPTED = ("integer arrays of values 0 to 255 (in a dtype that holds 255), or float arrays of values "
                      "k / 255 exactly (as vaekit reads 8-bit images)")


def eight_bit_values(array: np.ndarray, source: str) -> tuple[np.ndarray, int | float]:
    """The 8-bit values (uint8, the array's shape) to code and the value of 255 in the input (`one`): 255 for
    integer arrays, 1.0 for float arrays of values k / 255, True for bool arrays (0 and 255). DataError for
    anything `restore_8bit` could not give back exactly."""
    if array.size == 0:
        raise DataError(f"{source}: no images to compress")
    require_restorable(array, source)
    if array.dtype.kind == "b":  # False and True are the values 0 and 255
        return array.astype(np.uint8) * np.uint8(EIGHT_BIT), True
    if array.dtype.kind in "iu":
        if exact_one(EIGHT_BIT, array.dtype) is None or array.min() < 0 or array.max() > EIGHT_BIT:
            raise DataError(f"{source}: an 8-bit run compresses {EIGHT_BIT_ACCEPTED}; got {array.dtype} from "
                            f"{array.min()} to {array.max()}")
        return array.astype(np.uint8), EIGHT_BIT
    values = np.rint(array.astype(np.float64) * EIGHT_BIT).clip(0, EIGHT_BIT).astype(np.uint8)
    if not np.array_equal(restore_8bit(values, array.dtype, 1.0), array):
        raise DataError(f"{source}: an 8-bit run compresses {EIGHT_BIT_ACCEPTED}; these {array.dtype} values are "
                        "not all k / 255, so they would not come back exactly")
    return values, 1.0


def restore_8bit(values: np.ndarray, dtype: np.dtype, one: int | float) -> np.ndarray:
    """8-bit values back in the input's dtype: as they are for integers, k / 255 (in float64, then cast) for
    floats, whose `one` is 1.0, and k != 0 for bool."""
    if np.dtype(dtype).kind == "b":
        return values != 0
    if np.dtype(dtype).kind in "iu":
        return values.astype(dtype)
    return (values.astype(np.float64) / EIGHT_BIT * one).astype(dtype)
