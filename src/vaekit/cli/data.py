"""`vaekit data prepare`: convert a dataset once into a cache that training streams from."""

from __future__ import annotations

import sys
from pathlib import Path

from .args import add_data_dir_argument, non_empty_path

HELP = """\
Work on datasets before training.

  vaekit data prepare INPUT     convert INPUT once into a uint8 cache that training reads batch by batch
"""

PREPARE_HELP = """\
Convert images (a folder, an IDX, .npy or .npz file, or a built-in split) once into a vaekit dataset
cache: one uint8 file that training, eval and score read a batch at a time, so the dataset need not
fit in memory. The input is read a chunk at a time, so preparing needs little memory at any size.
The file is written under a temporary name and renamed when complete: a stopped conversion leaves
no cache behind. Its name is a key of the input's content and the preparation options; the same
input prepared again is found, not converted again. Every open checks its header and checksums.

Caches go to $VAEKIT_CACHE_DIR, else ~/.cache/vaekit/datasets (--out DIR puts one elsewhere).
`vaekit train --data INPUT` finds INPUT's cache there, and prepares it itself for data of more than
256 MiB of pixels ($VAEKIT_STREAM_ABOVE, in bytes, moves that line); --data FILE.vkds trains on a
cache file directly. See docs/large-datasets.md.

examples:
  vaekit data prepare photos/                   # prints the cache's path
  vaekit train --data photos/ --out runs/photos  # streams from the cache prepared above
  vaekit data prepare big.npy --out /scratch/caches
  vaekit train --data /scratch/caches/<key>.vkds --out runs/big
"""


def register(subparsers) -> None:
    group = subparsers.add_parser("data", help="prepare a dataset into a cache that training streams from",
                                  description=HELP)
    actions = group.add_subparsers(dest="data_command", metavar="ACTION")
    p = actions.add_parser("prepare", help="convert a dataset once into a streamed uint8 cache",
                           description=PREPARE_HELP)
    p.add_argument("input", metavar="INPUT",
                   help="images: a folder (or of class subfolders), an IDX, .npy or .npz file, or a built-in split "
                        "such as mnist:train")
    p.add_argument("--out", type=non_empty_path, metavar="DIR",
                   help="the folder to write the cache in (default $VAEKIT_CACHE_DIR, else ~/.cache/vaekit/datasets)")
    add_data_dir_argument(p)
    p.set_defaults(func=run_prepare)
    group.set_defaults(func=lambda args: group.print_help() or 0)


def run_prepare(args) -> int:
    from ..data.convert import prepare
    from ..data.streamed import open_streamed

    path, written = prepare(args.input, directory=args.out, data_dir=args.data_dir, progress=sys.stderr.isatty())
    images = open_streamed(path)  # checked as training will check it
    c, h, w = images.shape
    size = Path(path).stat().st_size
    print(f"{'prepared' if written else 'already prepared'}: {path} ({len(images):,} images of {c}x{h}x{w}, "
          f"{size / 2**20:,.1f} MiB)")
    return 0
