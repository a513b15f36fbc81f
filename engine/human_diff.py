"""A diff the researcher attaches to an idea they add or edit (issue 15, bug 9).

An attached diff is the idea's implementation: no implementer model is asked. It is checked
when it is given (here, by the CLI and the console, before the decision is stored) and again
when the engine implements the idea, with the same `prepare_patch` checks and protection rules
as a model's diff, so a diff the environment has since outgrown fails as an attempt.

The offline ideator (`--model catalog`) has a ready diff for each catalog idea and nothing else:
it cannot implement text a researcher wrote. A researcher's idea under it needs an attached
diff; `CATALOG_CANNOT` says so in the words the CLI, the console and the engine share.
"""

from __future__ import annotations

from pathlib import Path

from engine.environments import Environment
from engine.patching import prepare_patch
from engine.protection import DiffRules

#: The name an attached diff's attempt row gives as its "model".
RESEARCHER = "researcher"

CATALOG_CANNOT = ("the catalog ideator (--model catalog) cannot implement text a researcher "
                  "wrote: it only has the ready diffs of its catalog ideas")


class DiffRefused(ValueError):
    """An attached diff that cannot be used; the message names the file and the problem."""


def check_diff(env: Environment, diff: str, source: str) -> str:
    """The normalised diff if `diff` applies to `env` and passes the protection rules; else
    `DiffRefused` naming `source` (a file name, or "the diff") and the failing hunk."""
    if not diff.strip():
        raise DiffRefused(f"{source} is empty: attach a unified diff against {env.root}")
    outcome = prepare_patch(diff, env.root, env.protected, env.protected_lines,
                            rules=DiffRules.of(env))
    if outcome.ok and outcome.diff:
        return outcome.diff
    raise DiffRefused(f"{source} does not apply to environment {env.name!r} ({env.root}): "
                      f"{for_researcher(outcome.error or 'no change')}")


def for_researcher(error: str) -> str:
    """A patch error as written for a model, reworded for the researcher who wrote the diff:
    the first sentence that says what is wrong, without the instructions to the model."""
    text = error.removeprefix("The patch was not applied: ").strip()
    if text.startswith("your answer holds no diff"):
        return ("it holds no unified diff (expected '--- a/FILE', '+++ b/FILE' and '@@' "
                "hunks whose ' ' and '-' lines match the environment's files)")
    first = text.split("\n", 1)[0].strip()
    for cut in (" Leave it as it is", " Copy the ", " Send ", " Reply "):
        first = first.split(cut, 1)[0]
    return first.rstrip(". ")


def read_diff(path: str, stdin_text: str | None = None) -> tuple[str, str]:
    """(the diff's text, a name for messages) from a file path, or from `stdin_text` for "-".
    A missing or unreadable file raises `DiffRefused`."""
    if path == "-":
        return stdin_text or "", "the diff on standard input"
    p = Path(path).expanduser()
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except FileNotFoundError:
        raise DiffRefused(f"no diff file {p}: give the path of a unified diff") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffRefused(f"cannot read the diff file {p}: {exc}") from None


def catalog_add_refusal() -> str:
    return (f"{CATALOG_CANNOT}. Attach the diff that implements your idea (--diff FILE, a "
            "unified diff against the environment's code), or run the search with a model "
            "(--model) so its implementer writes it")


def catalog_edit_refusal(idea_id: int, catalog_diff: str | None) -> str:
    where = f" (the one it would run: {catalog_diff})" if catalog_diff else ""
    return (f"{CATALOG_CANNOT}; an edit of idea {idea_id} without a diff would run its old "
            f"diff{where} and score as before. Attach the diff that implements your edit "
            "(--diff FILE), or run the search with a model (--model)")


def check_for_search(env_path: str, path: str, stdin_text: str | None = None) -> str:
    """Read the diff at `path` ("-": `stdin_text`) and check it against the search's
    environment at `env_path`; the normalised diff, or `DiffRefused`."""
    from engine.environments import load

    diff, source = read_diff(path, stdin_text)
    try:
        env = load(env_path)
    except (ValueError, OSError) as exc:  # a moved or broken environment: say which
        raise DiffRefused(f"cannot check {source}: the search's environment {env_path} does "
                          f"not load ({exc})") from None
    return check_diff(env, diff, source)


def catalog_diff_source(env_path: str, catalog_stem: str | None, origin: str) -> str | None:
    """What an unedited catalog idea runs, in words for a refusal."""
    if catalog_stem:
        return str(Path(env_path) / "catalog" / f"{catalog_stem}.diff")
    if origin == "exploit":
        return "its parents' diffs combined"
    return None
