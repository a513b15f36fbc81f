"""Search management from the command line: `delete`, `rename`, `note`, `retry`.

The store does the work (engine/store/manage.py); this module checks what only the command
can know (is an engine alive, is someone at a terminal to confirm) and says what happened.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from console.cli import UsageError, _store


def _refused(exc: Exception) -> UsageError:
    return UsageError(str(exc))


def cmd_delete(args: argparse.Namespace) -> int:
    from engine.search import engine_alive
    from engine.store import job_ops, manage, ops

    store = _store(args)
    s = ops.find_search(store, args.search)
    if engine_alive(store.workspace, s.id):
        raise UsageError(f"search {s.name!r} is running (an engine drives it); stop it first "
                         f"with `ideaforge stop {s.name}`, then delete it")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"deleting {s.name!r} needs a confirmation: run it at a terminal, "
                             "or add --yes")
        ideas = sum(ops.counts_by_status(store, s.id).values())
        jobs = len(job_ops.list_jobs(store, s.id))
        sys.stdout.write(f"delete search {s.name!r} ({s.status}, {ideas} idea(s), {jobs} "
                         "job(s)) and its job folders? This cannot be undone. [y/N] ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            sys.stdout.write("nothing was deleted\n")
            return 0
    try:
        done = manage.delete_search(store, s.id)
    except manage.ManageRefused as exc:
        raise _refused(exc) from None
    n_ideas = done.rows.get("idea", 0)
    n_jobs = done.rows.get("job", 0)
    sys.stdout.write(f"deleted search {done.name!r}: {n_ideas} idea(s), {n_jobs} job(s), "
                     f"{len(done.folders)} folder(s) in {store.workspace}\n")
    if done.remote:
        sys.stdout.write(f"its job folders on {', '.join(done.remote)} are left there "
                         f"(jobs/<workspace id>/search-{s.id}); remove them by hand if you "
                         "need the space\n")
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    from engine.store import manage, ops

    store = _store(args)
    s = ops.find_search(store, args.search)
    try:
        old = manage.rename_search(store, s.id, args.new)
    except manage.ManageRefused as exc:
        raise _refused(exc) from None
    sys.stdout.write(f"search {old!r} is now {args.new.strip()!r}\n")
    return 0


def cmd_note(args: argparse.Namespace) -> int:
    from engine.store import manage, ops

    store = _store(args)
    idea = ops.get_idea(store, args.idea)
    text = None if args.clear else " ".join(args.text).strip()
    if not args.clear and not text:
        raise UsageError("the note is empty; give its text (or --clear to remove a note)")
    try:
        manage.set_note(store, idea.id, text)
    except manage.ManageRefused as exc:
        raise _refused(exc) from None
    sys.stdout.write(f"note on idea {idea.id} " + ("removed" if text is None else "saved; "
                     f"`ideaforge show {idea.id}` shows it") + "\n")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from engine.search import engine_alive
    from engine.store import manage

    store = _store(args)
    try:
        done = manage.retry_idea(store, args.idea)
    except manage.ManageRefused as exc:
        raise _refused(exc) from None
    from engine.store import ops

    s = ops.find_search(store, done.search)
    how = ("runs its diff again" if done.status == "implemented"
           else "is implemented afresh")
    if engine_alive(store.workspace, s.id):
        when = "the running engine picks it up at its next step"
    else:
        when = (("the search had finished: " if done.reopened else "")
                + f"`ideaforge resume {s.name}` runs it")
    sys.stdout.write(f"idea {args.idea} retried as idea {done.idea_id} (it {how}); {when}\n")
    return 0


def register(add: Any) -> None:
    """The parsers of delete, rename, note and retry; `add(name, fn, help)` makes one."""
    x = add("delete", cmd_delete, "delete a search: its ideas, jobs, metrics, events and job "
            "folders (asks first; refused while an engine drives it)")
    x.add_argument("search", help="a search's name or id")
    x.add_argument("--yes", action="store_true", help="do not ask for a confirmation (needed "
                   "without a terminal)")
    x = add("rename", cmd_rename, "give a search a new name (names are unique)")
    x.add_argument("search", help="a search's name or id")
    x.add_argument("new", help="the new name")
    x = add("note", cmd_note, "keep a note on an idea (shown by `show`; never sent to a model)")
    x.add_argument("idea", type=int, help="the idea's id")
    x.add_argument("text", nargs="*", help="the note (replaces an earlier one)")
    x.add_argument("--clear", action="store_true", help="remove the idea's note")
    x = add("retry", cmd_retry, "retry a failed or cancelled idea: a new idea with the same "
            "text (and diff, when it had one) whose parent is the failed one")
    x.add_argument("idea", type=int, help="the failed idea's id")
