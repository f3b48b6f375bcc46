"""One vocabulary of flags: every subcommand's options checked against vaekit.cli.vocabulary, former
spellings that still work, and a parser (and --help) built without torch."""

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vaekit
from vaekit.cli import build_parser, main
from vaekit.cli.args import DeprecatedAlias, ImageRef, image_reference
from vaekit.cli.vocabulary import DEPRECATED, OPTIONS, POSITIONALS, TOP

# options that the threads and polish branches add; until they are merged no parser has them
NOT_YET_MERGED: set[str] = set()
HEAVY = ("torch", "numpy", "PIL", "matplotlib", "safetensors", "tqdm", "constriction", "sklearn")


def commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser by its command: vaekit, its subcommands, and their own subcommands ("data prepare")."""
    found = [(TOP, build_parser())]
    for name, parser in found:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None:
            found += [(child if name == TOP else f"{name} {child}", p) for child, p in sub.choices.items()]
    return found


def arguments():
    """(command, key in the vocabulary, table, action) for every option and positional of every command,
    leaving out -h and the hidden former spellings."""
    for command, parser in commands():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, DeprecatedAlias)):
                continue
            if action.option_strings:
                yield command, "/".join(action.option_strings), OPTIONS, action
            else:
                yield command, action.dest, POSITIONALS, action


def as_spoken(command: str, action: argparse.Action) -> dict:
    """What the vocabulary fixes about an argument, as `action` has it."""
    if isinstance(action, argparse._SubParsersAction):  # the subcommands, each on a help line of its own
        return {"switch": False, "value": None, "metavar": action.metavar, "nargs": None, "choices": None}
    switch = action.nargs == 0
    shown = None if switch or action.choices is not None else action.metavar or action.dest.upper()
    choices = None if action.choices is None else tuple(action.choices)
    return {"switch": switch, "value": None if switch else action.type, "metavar": shown,
            "nargs": None if switch else action.nargs, "choices": choices}


def as_listed(command: str, entry) -> dict:
    fields = {**{f: getattr(entry, f) for f in ("switch", "value", "metavar", "nargs", "choices")},
              **entry.per_command.get(command, {})}
    return fields


def test_every_argument_of_every_command_is_in_the_vocabulary_and_agrees_with_it():
    problems = []
    for command, key, table, action in arguments():
        if key not in table:
            problems.append(f"{command} {key}: not in vaekit.cli.vocabulary")
            continue
        entry = table[key]
        if command not in entry.commands:
            problems.append(f"{command} {key}: the vocabulary does not list {command} among {entry.commands}")
        spoken, listed = as_spoken(command, action), as_listed(command, entry)
        for field, value in spoken.items():
            if value != listed[field]:
                problems.append(f"{command} {key}: {field} is {value!r}, the vocabulary says {listed[field]!r}")
    assert problems == []


def test_one_name_one_destination():
    dests = {}
    for _, key, _, action in arguments():
        dests.setdefault(key, set()).add(action.dest)
    assert {key: d for key, d in dests.items() if len(d) > 1} == {}


def test_every_entry_lists_exactly_the_commands_that_take_it():
    taken = {}
    for command, key, _, _ in arguments():
        taken.setdefault(key, set()).add(command)
    for key, entry in {**OPTIONS, **POSITIONALS}.items():
        if key in NOT_YET_MERGED and key not in taken:
            continue
        assert set(entry.commands) == taken.get(key, set()), key


def test_every_choice_is_named_in_the_help():
    missing = []
    for command, key, _, action in arguments():
        if action.choices is None or isinstance(action, argparse._SubParsersAction):
            continue
        for choice in action.choices:
            if not re.search(rf"(?<![\w-]){re.escape(str(choice))}(?![\w-])", action.help or ""):
                missing.append(f"{command} {key}: {choice}")
    assert missing == []


def test_score_method_help_lists_mse():
    score = dict(commands())["score"]
    method = next(a for a in score._actions if "--method" in a.option_strings)
    assert "mse" in method.choices and "mse: the squared error" in method.help


def test_the_top_level_help_does_not_limit_interpolate_to_test_images():
    help_text = build_parser().format_help()
    assert "decode a path between two images" in help_text and "two test images" not in help_text


def former_spelling(command: str, option: str) -> DeprecatedAlias:
    parser = dict(commands())[command]
    return next(a for a in parser._actions if isinstance(a, DeprecatedAlias) and option in a.option_strings)


@pytest.mark.parametrize("command, option", sorted(DEPRECATED))
def test_former_spellings_are_hidden_and_name_what_replaced_them(command, option):
    alias = former_spelling(command, option)
    assert alias.help == argparse.SUPPRESS
    replacement = DEPRECATED[command, option]
    parser = dict(commands())[command]
    current = [a for a in parser._actions if replacement in a.option_strings or a.dest == replacement]
    assert len(current) == 1
    assert (replacement.upper() if not replacement.startswith("-") else replacement) in alias.instead
    assert option not in re.findall(r"(?<![\w-])-{1,2}[\w-]+", parser.format_usage())  # not offered any more


@pytest.mark.parametrize("argv, dest, value, note", [
    (["compress", "R", "x.npy", "-o", "x.vkbb", "--precision", "10"], "latent_bits", 10,
     "vaekit compress --precision is deprecated and will be removed: use --latent-bits 10"),
    (["manifold", "R", "-n", "6", "-o", "m.png"], "side", 6,
     "vaekit manifold -n is deprecated and will be removed: use --side 6"),
    (["calibrate", "R", "--data", "normal.npy"], "data_alias", "normal.npy",
     "vaekit calibrate --data is deprecated and will be removed: use the positional INPUT: "
     "vaekit calibrate RUN normal.npy"),
])
def test_former_spellings_still_work_with_a_one_line_note(capsys, argv, dest, value, note):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err.splitlines() == [f"vaekit: warning: {note}"]


def test_current_spellings_give_the_same_values_without_a_note(capsys):
    parser = build_parser()
    assert parser.parse_args(["compress", "R", "x.npy", "-o", "x.vkbb", "--latent-bits", "10"]).latent_bits == 10
    assert parser.parse_args(["compress", "R", "x.npy", "-o", "x.vkbb"]).latent_bits == 8
    assert parser.parse_args(["manifold", "R", "--side", "6", "-o", "m.png"]).side == 6
    assert parser.parse_args(["calibrate", "R", "normal.npy"]).input == "normal.npy"
    assert parser.parse_args(["calibrate", "R"]).input is None
    assert capsys.readouterr().err == ""


def test_calibrate_refuses_its_images_given_twice(capsys):
    code = main(["calibrate", "R", "a.npy", "--data", "b.npy"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[-1] == "vaekit: error: give the normal images once: as INPUT (--data is its former spelling)"


@pytest.mark.parametrize("text, expected", [
    ("0", ImageRef(None, 0)), ("7", ImageRef(None, 7)), ("mnist:test@3", ImageRef("mnist:test", 3)),
    ("my_seven.png", ImageRef("my_seven.png", 0)), ("scans/a.npy@12", ImageRef("scans/a.npy", 12)),
])
def test_image_references(text, expected):
    assert image_reference(text) == expected
    assert str(expected) == (text if "@" in text or text.isdigit() else f"{text}@0")


@pytest.mark.parametrize("text", ["a.png@x", "@3", "mnist:test@-1"])
def test_bad_image_references_are_one_line(capsys, text):
    assert main(["traverse", "R", "--image", text, "-o", "t.png"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"vaekit: error: vaekit traverse: argument --image: expected a test index, SOURCE or SOURCE@N, "
                   f"got {text!r} (see vaekit traverse --help)"]


def test_traverse_and_interpolate_take_the_same_image_references():
    parsers = dict(commands())
    for command, option in (("traverse", "--image"), ("interpolate", "--from"), ("interpolate", "--to")):
        action = next(a for a in parsers[command]._actions if option in a.option_strings)
        assert action.type is image_reference and action.metavar == "IMAGE"


def test_the_vocabulary_entries_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        OPTIONS["--seed"].metavar = "S"


SRC = str(Path(vaekit.__file__).parents[1])


def imported_by(*argv: str) -> set[str]:
    """The top-level packages that `python -X importtime *argv` imports (run in a fresh interpreter)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["score", "--help"],
                                  ["data", "prepare", "--help"]])
def test_help_imports_no_heavy_module(argv):
    imported = imported_by("-m", "vaekit", *argv)
    assert "vaekit" in imported and "argparse" in imported  # the log is read right
    assert sorted(imported & set(HEAVY)) == []


def test_every_parser_is_built_without_heavy_modules():
    script = ("import sys, vaekit.cli as c\n"
              "parser = c.build_parser()\n"
              "sub = next(a for a in parser._actions if a.__class__.__name__ == '_SubParsersAction')\n"
              "text = parser.format_help() + ''.join(p.format_help() for p in sub.choices.values())\n"
              "import vaekit.cli.vocabulary\n"
              f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_api_still_loads_on_first_use():
    script = ("import sys, vaekit\n"
              "assert 'torch' not in sys.modules\n"
              "from vaekit import fit, load_run, sample, VAE\n"
              "import vaekit.fit\n"
              "assert vaekit.fit is fit and callable(fit) and 'torch' in sys.modules\n"
              "assert set(vaekit.__all__) <= set(dir(vaekit))\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_shown_latent_bits_default_is_the_coders():
    from vaekit.choices import LATENT_BITS
    from vaekit.compress import DEFAULT_PRECISION

    assert LATENT_BITS == DEFAULT_PRECISION == 8  # compress.py keeps its own name until it imports choices


@pytest.mark.parametrize("argv, verdict", [
    (["manifold", "R", "-o", "m.png", "-n", "3", "--side", "4"], "-n 3 and --side 4 disagree: give only --side 4"),
    (["manifold", "R", "-o", "m.png", "--side", "4", "-n", "3"], "-n 3 and --side 4 disagree: give only --side 4"),
    (["manifold", "R", "-o", "m.png", "-n", "3", "--side", "4", "-n", "5"],
     "-n 5 and --side 4 disagree: give only --side 4"),
    (["compress", "R", "x.npy", "-o", "x.vkbb", "--precision", "12", "--latent-bits", "14"],
     "--precision 12 and --latent-bits 14 disagree: give only --latent-bits 14"),
    (["manifold", "R", "-o", "m.png", "-n", "3", "--side", "3"], 3),
    (["manifold", "R", "-o", "m.png", "-n", "3", "-n", "4"], 4),
    (["manifold", "R", "-o", "m.png", "-n", "3", "--side", "4", "-n", "4"], 4),
])
def test_a_former_and_a_current_spelling_that_disagree_are_refused(capsys, argv, verdict):
    """`manifold -n 3 --side 4` (or `--precision 12 --latent-bits 14`) used whichever came last, without a word."""
    if isinstance(verdict, int):
        args = build_parser().parse_args(argv)
        assert (getattr(args, "side", None) or args.latent_bits) == verdict
        return
    code = main(argv)
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"vaekit: error: vaekit {argv[0]}: {verdict}"
