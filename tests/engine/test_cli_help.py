"""Every option of every `ideaforge` command says what it does and, when it has one, its
default (issue 15: "every option of every command has help text and its default")."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

from console.cli import build_parser
from tests.conftest import cli


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _shown(action: argparse.Action) -> bool:
    return action.help is not argparse.SUPPRESS and not isinstance(
        action, (argparse._HelpAction, argparse._SubParsersAction))


def test_every_option_of_every_command_has_help_and_shows_its_default() -> None:
    seen = 0
    missing, no_default = [], []
    for path, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())  # argparse wraps lines anywhere
        for action in filter(_shown, parser._actions):
            seen += 1
            name = " ".join(["ideaforge", *path, *(action.option_strings or [action.dest])])
            if not (action.help or "").strip():
                missing.append(name)
            default = action.default
            shown = re.search(rf"\(default: {re.escape(str(default))}[);]", text)
            if default not in (None, False, [], argparse.SUPPRESS) and not shown:
                no_default.append(f"{name} (default {default!r})")
    assert seen > 80  # every command was walked, hosts' own subcommands too
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"defaults not shown in --help: {no_default}"


def test_help_as_the_user_reads_it(workspace) -> None:
    run = cli("run", "--help", workspace=workspace)
    assert run.returncode == 0
    flat = " ".join(run.stdout.split())
    for said in ("--epochs EPOCHS epochs in all", "(default: 3)", "(default: smoke)",
                 "(default: catalog)", "(default: top-4)"):
        assert said in flat, said
    assert flat.count("(default:") == flat.count("(default: ") and "default: None" not in flat
    ideas = " ".join(cli("ideas", "--help", workspace=workspace).stdout.split())
    assert "{id,score,status,runs}" in ideas and "(default: id)" in ideas
    assert "`delta` is score − baseline" in ideas
    top = cli("--help", workspace=workspace).stdout
    for command in ("envs", "delete", "rename", "note", "retry"):
        assert f"    {command} " in top, command
