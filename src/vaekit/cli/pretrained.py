"""`vaekit pretrained list` and `vaekit pretrained copy`: the trained runs shipped with vaekit."""

from __future__ import annotations

import json

from .args import non_empty_path

HELP = """\
Trained runs ship with vaekit, to use at once: every command that takes RUN takes pretrained:NAME.

  vaekit pretrained list [--json]     each one's name, what it is, its size and its measured numbers
  vaekit pretrained copy NAME DIR     copy one to a new run directory of your own (to calibrate, fit a sampler)

examples:
  vaekit sample pretrained:mnist --sampler gmm -o samples.png
  vaekit eval pretrained:fashion-mnist
  vaekit score pretrained:mnist-anomaly mnist:test -o scores.csv
  vaekit compress pretrained:mnist-compress mnist:test -o test.vkbb
  vaekit pretrained copy mnist runs/mine && vaekit fit-sampler runs/mine --sampler flow

They are read-only: commands that write into a run (calibrate, fit-sampler, train --resume) refuse one
and name the copy command. They ship without their optimizer state: a copy serves every command but
train --resume. Each run's files are checked against their SHA-256 in the manifest whenever
it is opened; the manifest also records the commands that made each run (scripts/make_pretrained.py
rebuilds them all). See docs/pretrained.md.
"""

COPY_HELP = """\
Copy a pretrained run to DIR, a new run directory of your own, which commands may then write into
(vaekit calibrate, vaekit fit-sampler). DIR must not exist: nothing is replaced.
The files are checked against the manifest as they are copied.

examples:
  vaekit pretrained copy mnist runs/mnist
  vaekit pretrained copy pretrained:mnist-anomaly runs/detector
"""


def register(subparsers) -> None:
    group = subparsers.add_parser("pretrained", help="the trained runs shipped with vaekit: list them, copy one",
                                  description=HELP)
    actions = group.add_subparsers(dest="pretrained_command", metavar="ACTION")
    p = actions.add_parser("list", help="each pretrained run's name, what it is, its size and numbers",
                           description="List the pretrained runs: name, what it is, size and measured numbers.")
    p.add_argument("--json", action="store_true", help="print one JSON object: the manifest's runs with their sizes")
    p.set_defaults(func=run_list)
    p = actions.add_parser("copy", help="copy a pretrained run to a new run directory", description=COPY_HELP)
    p.add_argument("name", metavar="NAME", help="the pretrained run (mnist, or pretrained:mnist)")
    p.add_argument("target", type=non_empty_path, metavar="DIR", help="the run directory to create")
    p.set_defaults(func=run_copy)
    group.set_defaults(func=lambda args: group.print_help() or 0)


def run_list(args) -> int:
    from .. import pretrained

    manifest = pretrained.read_manifest()
    listed = {name: {"run": pretrained.PREFIX + name, "description": run["description"],
                     "bytes": sum(spec["bytes"] for spec in run["files"].values()), "numbers": run["numbers"],
                     "commands": run["commands"]} for name, run in manifest["runs"].items()}
    if args.json:
        print(json.dumps({"made_with": manifest["made_with"], "runs": listed}))
        return 0
    if not listed:
        print("this vaekit ships no pretrained runs")
        return 0
    for run in listed.values():
        numbers = ", ".join(f"{key} {value}" for key, value in run["numbers"].items())
        print(f"{run['run']}  ({run['bytes'] / 2**20:.1f} MiB)\n  {run['description']}\n  {numbers}\n")
    made = manifest["made_with"]
    print(f"made with vaekit {made.get('vaekit')}, torch {made.get('torch')} on {made.get('cpu')}; "
          "`vaekit pretrained list --json` shows the commands")
    return 0


def run_copy(args) -> int:
    from .. import pretrained

    target = pretrained.copy(args.name, args.target)
    name = pretrained.bare(args.name)
    print(f"copied {pretrained.PREFIX}{name} to {target}: a run directory of your own")
    return 0
