"""Data: the IDX reader, built-in datasets and their download, and turning images into batches."""

from .batches import binarize, epoch_order, fixed_binarization, latent_inputs, prepare, standardize, to_unit
from .datasets import DATASETS, FASHION_MNIST, MNIST, DataFile, DatasetSpec, load_split, load_splits, search_dirs
from .idx import encode_idx, parse_idx, read_idx
from .imageset import ImageSet
from .sources import (as_seen, conform, from_array, is_builtin, load_held_out, load_train_test, read_array,
                      read_images)

__all__ = [
    "DATASETS", "FASHION_MNIST", "MNIST", "DataFile", "DatasetSpec", "ImageSet",
    "binarize", "latent_inputs", "encode_idx", "epoch_order", "fixed_binarization", "load_split", "parse_idx",
    "prepare", "read_idx", "search_dirs", "standardize", "to_unit", "conform", "from_array", "is_builtin",
    "load_train_test", "read_array", "read_images", "as_seen", "load_held_out", "load_splits",
]
