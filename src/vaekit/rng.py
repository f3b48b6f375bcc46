"""Seeded random streams. Every random draw in vaekit comes from a generator made here."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream named by `keys` under `seed`: stable across runs and platforms."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed`."""
    return torch.Generator(device=device).manual_seed(seed)


def seeded_choice(size: int, count: int, seed: int) -> torch.Tensor:
    """At most `count` of the indices 0..size-1, chosen by `seed` without replacement, in increasing order (all of
    them when size <= count)."""
    return torch.randperm(size, generator=make_generator(seed))[:count].sort().values
