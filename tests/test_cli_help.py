"""`fastkrb --help` explains every flag of every subcommand, `fastkrb --version` prints the version, and the
sizing line of `fastkrb bench` prints latencies as measured."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

import fastkrb
from fastkrb.capacity.planner import sizing_line
from fastkrb.tools import cli

SRC = Path(__file__).resolve().parents[1] / "src"


def _parser() -> argparse.ArgumentParser:
    """The parser cli.main builds, caught just before it parses."""
    caught: list[argparse.ArgumentParser] = []

    def stop(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        caught.append(self)
        raise SystemExit(0)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop), pytest.raises(SystemExit):
        cli.main([])
    return caught[0]


def _walk(p: argparse.ArgumentParser, path: str = "fastkrb") -> Iterator[tuple[str, argparse.Action, str]]:
    """(command path, action, help text) for every argument of every (sub)command, and every subcommand."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help or "" for c in action._choices_actions}
            for name, subparser in action.choices.items():
                yield path, action, helps.get(name, "")
                yield from _walk(subparser, f"{path} {name}")
        else:
            yield path, action, action.help or ""


def test_every_flag_of_every_subcommand_has_help() -> None:
    seen = list(_walk(_parser()))
    commands = {path for path, _, _ in seen}
    # the tree really was walked: every subcommand, nested ones too
    assert {"fastkrb validate", "fastkrb keytab list", "fastkrb dev header", "fastkrb bench",
            "fastkrb serve"} <= commands
    missing = [f"{path}: {'/'.join(a.option_strings) or a.dest}" for path, a, text in seen
               if not text.strip() or text == argparse.SUPPRESS]
    assert not missing, f"arguments without --help text: {missing}"


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "fastkrb", "--version"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert out.strip() == f"fastkrb {fastkrb.__version__}"
    assert fastkrb.__version__.count(".") == 2


@pytest.mark.parametrize(("p99_ms", "shown"), [(0.005358, "p99 5.36 µs"), (0.0999, "p99 99.9 µs"),
                                                (7.5824, "p99 7.58 ms"), (123.4, "p99 123 ms")])
def test_bench_sizing_line_prints_what_was_measured(p99_ms: float, shown: str) -> None:
    line = sizing_line({"scenario": "in-process, replay=memory", "per_core_rps": 240217, "p99_ms": p99_ms,
                        "headroom": 0.7})
    assert f"240,217/s per core at {shown} (in-process, replay=memory)" in line
    assert "<=" not in line
