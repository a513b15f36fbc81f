"""`ideaforge add` and `ideaforge edit`: a researcher's own idea, or an edit of one, as a
decision the engine applies, optionally with the researcher's own diff (issue 15, bug 9):
checked against the search's environment here, before anything is stored.

The offline catalog ideator cannot implement text a researcher wrote (`engine.human_diff`),
so under it an idea added or edited without a diff is refused (exit 2) rather than stored to
fail or to run an old diff.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from console.cli import UsageError, _epoch_label, _idea_for_decision, _store


def register(add: Any) -> None:
    x = add("edit", cmd_edit, "edit an idea (in $EDITOR or from a file) as a new version")
    x.add_argument("idea", type=int, help="the idea's id")
    x.add_argument("--text-file", help="read the new text from this file (default: edit it "
                   "in $VISUAL or $EDITOR; with --diff, the text stays as it is)")
    x.add_argument("--diff", metavar="FILE", help="your own unified diff against the "
                   "environment's code ('-': standard input): checked now, and run as the "
                   "idea's implementation instead of asking a model. Without it a model "
                   "implements the new text; under --model catalog an edit needs it (the "
                   "catalog cannot implement new text)")
    x = add("add", cmd_add, "add your own idea to a search")
    x.add_argument("search", help="a search's name or id")
    x.add_argument("--text-file", help="read the idea's text from this file (default: write "
                   "it in $VISUAL or $EDITOR)")
    x.add_argument("--diff", metavar="FILE", help="your own unified diff against the "
                   "environment's code ('-': standard input): checked now, and run as the "
                   "idea's implementation instead of asking a model. Required under --model "
                   "catalog (the catalog cannot implement new text)")


def _read_text(path: str | None, initial: str) -> str:
    if path:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the idea's text from {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}; nothing was saved"
                             ) from None
    else:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("w+", suffix=".txt", delete=False) as fh:
            fh.write(initial)
        subprocess.run([*editor.split(), fh.name], check=False)
        text = Path(fh.name).read_text(encoding="utf-8")
        os.unlink(fh.name)
    if not text.strip():
        raise UsageError("the idea text is empty; nothing was changed")
    return text.strip()


def cmd_edit(args: argparse.Namespace) -> int:
    from engine import human_diff
    from engine.store import ops

    store = _store(args)
    idea = _idea_for_decision(store, args.idea, {"proposed", "approved"})
    s = ops.find_search(store, idea.search_id)
    diff = _attached_diff(args.diff, s.env_path)
    if diff is None and s.model == "catalog":
        raise UsageError(human_diff.catalog_edit_refusal(idea.id, human_diff.catalog_diff_source(
            s.env_path, idea.catalog_stem, idea.origin)))
    # With a diff and no text file the text stays as it is: the edit is the implementation.
    text = (idea.text.strip() if diff is not None and not args.text_file
            else _read_text(args.text_file, idea.text))
    if text == idea.text.strip() and diff is None:
        raise UsageError("the text is unchanged; nothing was saved")
    ops.add_decision(store, idea.search_id, "edit", idea.id, text=text, diff=diff)
    what = " with your diff" if diff is not None else ""
    sys.stdout.write(f"edit of idea {idea.id} saved{what}; the engine stores it as a new "
                     "version\n")
    return 0


def _attached_diff(path: str | None, env_path: str) -> str | None:
    """The diff given with --diff, checked against the search's environment (exit 2 if it
    does not apply); None without --diff."""
    from engine.human_diff import DiffRefused, check_for_search

    if path is None:
        return None
    try:
        return check_for_search(env_path, path, sys.stdin.read() if path == "-" else None)
    except DiffRefused as exc:
        raise UsageError(f"{exc}; nothing was saved") from None


def cmd_add(args: argparse.Namespace) -> int:
    from engine import human_diff
    from engine.store import ops

    store = _store(args)
    s = ops.find_search(store, args.search)
    diff = _attached_diff(args.diff, s.env_path)
    if diff is None and s.model == "catalog":
        raise UsageError(human_diff.catalog_add_refusal() + "; nothing was saved")
    text = _read_text(args.text_file, "[Experiment] \n[Code Changes] \n")
    ops.add_decision(store, s.id, "add", text=text, diff=diff)
    how = ("it runs with your diff" if diff is not None
           else "the implementer model writes its diff")
    sys.stdout.write(f"idea added to {s.name!r} ({_epoch_label(s.epoch, s.epochs)}); the engine "
                     f"picks it up ({how})\n")
    return 0
