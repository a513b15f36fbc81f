"""`prepare_patch`: a model's answer in, a checked and normalised diff (or a reason) out.

Order of work: cut the change out of the answer (extract.py), read it leniently (loose.py or
search_replace.py), map paths onto environment files (paths.py), place every hunk (locate.py),
then check the rules on the patched text and write the normalised diff, which is parsed back
with unidiff and re-applied strictly as a self-check before it is handed out.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.patching.apply import apply_diff
from engine.patching.extract import FORMAT_HELP, extract
from engine.patching.habits import undo_habits
from engine.patching.locate import LEVELS, FileIndex, Placement, apply_placed, insertion, place
from engine.patching.loose import DEV_NULL, LooseFile, LooseHunk, parse_loose
from engine.patching.outcome import PatchError, PatchOutcome, Rejected
from engine.patching.paths import EnvTree, PathProblem, is_protected
from engine.patching.search_replace import parse_blocks
from engine.patching.text import content, file_mode, make_diff, read_text, split_keepends
from engine.protection import DiffRules, guarded_modules, region_problems, shadow_problems

log = logging.getLogger(__name__)

_RESEND = {
    "unified": "Copy the ' ' and '-' lines exactly from the current file and send the whole "
               "diff again.",
    "search_replace": "Copy the SEARCH lines exactly from the current file and send all blocks "
                      "again.",
}


@dataclass
class _Edit:
    """What the answer wants done to one file."""

    rel: str | None  # None until a header-less hunk is matched to a file
    kind: str  # "modify" | "create" | "delete"
    hunks: list[LooseHunk] = field(default_factory=list)
    label: str = ""  # the name the model used, for messages


class _Job:
    def __init__(self, env_dir: Path, protected: Sequence[str],
                 protected_lines: Mapping[str, Sequence[str]],
                 rules: DiffRules | None = None) -> None:
        self.tree = EnvTree(Path(env_dir))
        self.protected = tuple(protected)
        self.protected_lines = {k.removeprefix("./"): tuple(v.strip() for v in vs)
                                for k, vs in protected_lines.items()}
        self.rules = rules or DiffRules()
        self.regions = {k.removeprefix("./"): tuple(v) for k, v in self.rules.regions.items()}
        self.repairs: list[str] = []
        self.problems: list[str] = []
        self.advice = ""
        self.form = "unified"
        self._moved: dict[tuple[str, int], list[int]] = {}

    def repair(self, note: str | None) -> None:
        if note and note not in self.repairs:
            self.repairs.append(note)

    def shadowing(self, new_files: list[str]) -> list[str]:
        """Refusals for new files named like a module the code would import instead."""
        if not new_files:
            return []
        labels = {rel: "an evaluator file" for rel in self.rules.evaluator_files}
        labels.update({rel: "a file with protected regions" for rel in self.regions})
        labels.update({rel: "a protected file" for rel in self.tree.files
                       if is_protected(rel, self.protected)})
        texts = {}
        for rel in labels:
            if rel.endswith(".py"):
                try:
                    texts[rel] = read_text(self.tree.root / rel)
                except (OSError, UnicodeDecodeError):
                    continue
        # a script's folder is its sys.path[0]: the environment's, and the protected ones'
        roots = {""} | {rel.rpartition("/")[0] for rel in texts}
        return shadow_problems(new_files, self.tree.files, guarded_modules(texts, labels),
                               roots)

    def fail_if_problems(self) -> None:
        if self.problems:
            raise Rejected(*self.problems, advice=self.advice)

    # -- reading the answer ------------------------------------------------------------------
    def edits(self, answer: str) -> list[_Edit]:
        extracted = extract(answer)
        self.form = extracted.form
        for note in extracted.repairs:
            self.repair(note)
        if extracted.form == "search_replace":
            return self._search_replace_edits(extracted.text)
        loose = parse_loose(extracted.text)
        for note in loose.repairs:
            self.repair(note)
        for loose_file in loose.files:
            empty = [h for h in loose_file.hunks if not h.ops]
            if empty and len(empty) < len(loose_file.hunks):
                self.repair(f"dropped {len(empty)} empty hunk(s)")
            loose_file.hunks = [h for h in loose_file.hunks if h.ops]
        last = loose.files[-1].hunks[-1] if loose.files and loose.files[-1].hunks else None
        if extracted.unterminated and last is not None and last.short:
            # an open fence plus a hunk shorter than its header: the answer was cut off, and
            # "fixing" the counts would apply half a change
            raise Rejected("the diff seems cut off: the code fence is never closed and the last "
                           "hunk has fewer lines than its '@@' header says. Send the complete "
                           "diff (keep it shorter if needed)")
        if not any(f.hunks or f.binary or f.creates or f.deletes for f in loose.files):
            raise Rejected("the diff has no usable '@@' hunks (a '@@ -l,n +l,n @@' line followed "
                           "by ' ', '-' and '+' lines). " + FORMAT_HELP)
        return [e for e in (self._file_edit(f) for f in loose.files) if e is not None]

    def _search_replace_edits(self, text: str) -> list[_Edit]:
        try:
            blocks = parse_blocks(text)
        except ValueError as exc:
            raise Rejected(str(exc)) from None
        edits = []
        for block in blocks:
            if block.listing_numbers:
                self.repair(f"removed line numbers copied from the listing (block "
                            f"{block.number})")
            if block.path is None:
                edits.append(_Edit(None, "modify", [block.hunk()],
                                   f"the lines of SEARCH/REPLACE block {block.number}"))
                continue
            if not any(line.strip() for line in block.search):
                try:
                    exists = self.tree.existing(block.path) is not None
                except PathProblem:
                    exists = False  # _new_file reports the path problem
                if exists:
                    self.problems.append(f"SEARCH/REPLACE block {block.number} has an empty "
                                         f"SEARCH part, which creates a file, but {block.path} "
                                         "exists: put the lines to replace in SEARCH")
                    continue
                edits.append(self._new_file(block.path, [block.hunk()]))
                continue
            edits.append(self._existing(block.path, block.path, [block.hunk()]))
        return [e for e in edits if e is not None]

    def _new_file(self, raw: str, hunks: list[LooseHunk]) -> _Edit | None:
        try:
            rel, note = self.tree.new(raw)
        except PathProblem as exc:
            self.problems.append(str(exc))
            return None
        target = self.tree.root / rel
        if self.tree.exists(rel) or target.exists() or target.is_symlink():
            self.problems.append(f"the diff creates {rel}, which already exists; write a diff "
                                 "that changes the existing file instead")
            return None
        self.repair(note)
        if any(tag != "+" for hunk in hunks for tag, _ in hunk.ops):
            self.problems.append(f"the diff creates {rel} but has ' ' or '-' lines for it; a "
                                 "new file's hunk holds only '+' lines")
            return None
        return _Edit(rel, "create", hunks, raw)

    def _existing(self, new_raw: str | None, old_raw: str | None,
                  hunks: list[LooseHunk]) -> _Edit | None:
        try:
            found = {raw: self.tree.existing(raw) for raw in (new_raw, old_raw)
                     if raw and raw != DEV_NULL}
        except PathProblem as exc:
            self.problems.append(str(exc))
            return None
        hits = {raw: hit for raw, hit in found.items() if hit is not None}
        rels = {hit[0] for hit in hits.values()}
        label = _shown(new_raw or old_raw or "?")
        if len(rels) > 1:
            self.problems.append(f"the '---' and '+++' lines name different files ({old_raw}, "
                                 f"{new_raw}); renaming is not supported: name the same file "
                                 "on both lines")
            return None
        if not rels:
            if hunks and all(tag == "+" for h in hunks for tag, _ in h.ops):
                self.repair(f"treated {label} as a new file (it does not exist yet)")
                return self._new_file(new_raw or old_raw or "", hunks)
            shown = ", ".join(self.tree.files[:20])
            self.problems.append(f"'{label}' is not a file of the environment (its files: "
                                 f"{shown}); use one of these paths, relative to the "
                                 "environment directory")
            return None
        rel = rels.pop()
        for raw, (_, note) in hits.items():
            self.repair(note)
            if note is None and self.form == "unified" and raw.split("/", 1)[0] not in ("a", "b"):
                self.repair("added a/ b/ prefixes to the paths")
        if len(found) == 2 and len(hits) == 1:
            self.repair(f"'---' and '+++' named different files; used {rel}")
        return _Edit(rel, "modify", hunks, label)

    def _file_edit(self, loose: LooseFile) -> _Edit | None:
        name = _shown(loose.new_path or loose.old_path or "?")
        if loose.binary:
            self.problems.append(f"the diff holds a binary patch ({name}); only text changes "
                                 "to source files are accepted")
            return None
        if loose.symlink_mode:
            self.problems.append(f"the diff creates or changes a symlink ({name}); patches may "
                                 "not touch symlinks")
            return None
        if loose.old_path is None and loose.new_path is None:
            if not loose.hunks:
                return None
            return _Edit(None, "modify", loose.hunks, "the diff's hunks")
        if loose.creates and loose.deletes:
            self.problems.append(f"a file section for {name} names /dev/null on both sides")
            return None
        if loose.creates:
            return self._new_file(loose.new_path or "", loose.hunks)
        if loose.deletes:
            try:
                hit = self.tree.existing(loose.old_path or "")
            except PathProblem as exc:
                self.problems.append(str(exc))
                return None
            if hit is None:
                self.problems.append(f"the diff deletes '{loose.old_path}', which is not a file "
                                     "of the environment")
                return None
            self.repair(hit[1])
            return _Edit(hit[0], "delete", loose.hunks, loose.old_path or "")
        return self._existing(loose.new_path, loose.old_path, loose.hunks)

    # -- placing hunks ---------------------------------------------------------------------------
    def patched_text(self, edit: _Edit, original: str) -> str | None:
        """The file after `edit`, or None with problems recorded for every hunk that failed."""
        lines = split_keepends(original)
        index = FileIndex(lines)
        placed: list[tuple[LooseHunk, Placement]] = []
        offset = 0
        failed = False
        for n, hunk in enumerate(edit.hunks, 1):
            undone = undo_habits(hunk, index, self._which(edit, n, hunk))
            if undone.problem:
                self.problems.append(undone.problem)
                failed = True
                continue
            for note in undone.notes:
                self.repair(note)
            hunk = edit.hunks[n - 1] = undone.hunk
            where = self._place_one(edit, n, hunk, index, offset, [p for _, p in placed])
            if where is None:
                failed = True
                continue
            placed.append((hunk, where))
            if hunk.old_start is not None and where.mapping:
                first = next(m for m in where.mapping if m is not None)
                lead = where.mapping.index(first)
                offset = first - lead - max(hunk.old_start - 1, 0)
        for (rel, delta), numbers in self._moved.items():
            which = (f"hunk {numbers[0]}" if len(numbers) == 1 else
                     "hunks " + ", ".join(map(str, numbers)))
            self.repair(f"relocated {which} of {rel} by context ({delta:+d} lines)")
        self._moved.clear()
        if failed:
            return None
        final_newline = original.endswith("\n") or not original
        if any(h.no_newline_marker for h in edit.hunks) and final_newline:
            self.repair(f"ignored a '\\ No newline at end of file' marker ({edit.rel} ends "
                        "with a newline)")
        return "".join(apply_placed(lines, placed, final_newline))

    def _which(self, edit: _Edit, n: int, hunk: LooseHunk) -> str:
        return f"hunk {n} of {edit.rel}" if self.form == "unified" else \
            f"{hunk.header} ({edit.rel})"

    def _place_one(self, edit: _Edit, n: int, hunk: LooseHunk, index: FileIndex, offset: int,
                   taken: list[Placement]) -> Placement | None:
        which = self._which(edit, n, hunk)
        if not hunk.old_lines:
            where = insertion(hunk, len(index.lines))
            if where is None:
                self.problems.append(f"{which} has no ' ' or '-' lines, so there is no way to "
                                     "tell where it goes; include 3 unchanged lines around the "
                                     "change")
            return where
        hint = None if hunk.old_start is None else max(hunk.old_start - 1, 0) + offset
        where = place(hunk, index, hint, taken)
        if where is None:
            self.problems.append(self._not_found(which, edit.rel or "?", hunk, index))
            self.advice = _RESEND[self.form]
            return None
        first = next(m for m in where.mapping if m is not None)
        start = first - where.mapping.index(first)
        if hunk.old_start is not None and start != hunk.old_start - 1:
            self._moved.setdefault((edit.rel or "?", start - hunk.old_start + 1), []).append(n)
        if where.level:
            self.repair(f"matched {which} {LEVELS[where.level]}")
        if where.fuzz:
            self.repair(f"ignored {where.fuzz} context line(s) of {which} that do not match "
                        "the file")
        if where.add_indent or where.drop_indent:
            shift = len(where.add_indent) - len(where.drop_indent)
            self.repair(f"re-indented the added lines of {which} ({shift:+d} columns)")
        return where

    @staticmethod
    def _not_found(which: str, rel: str, hunk: LooseHunk, index: FileIndex) -> str:
        old = [line for line in hunk.old_lines if line.strip()]
        missing = [line for line in old if "".join(line.split()) not in index.where[2]]
        probe = missing[0] if missing else (old[0] if old else "")
        msg = f"{which} does not match the file: "
        if missing:
            msg += f"the line {probe.strip()[:80]!r} is not in {rel}"
        else:
            msg += ("its lines exist in the file but not together in that order (or only where "
                    "another hunk already changes it)")
        close = difflib.get_close_matches(probe, index.lines, n=1, cutoff=0.6)
        if missing and close:
            line_no = index.lines.index(close[0]) + 1
            msg += f" (closest, line {line_no}: {close[0].strip()[:80]!r})"
        return msg + "."

    def resolve_headerless(self, edit: _Edit) -> bool:
        """Give header-less hunks the environment file where they fit best, if only one does.

        Fit is ranked by tolerance used (exact beats whitespace-blind beats fuzz), so a block
        that two files share in similar forms goes to the one that holds it exactly.
        """
        fits: list[tuple[int, str]] = []
        for rel in self.tree.files:
            try:
                self.tree.check_target(rel)
                text = read_text(self.tree.root / rel)
            except (PathProblem, UnicodeDecodeError, OSError):
                continue
            index = FileIndex(split_keepends(text))
            taken: list[Placement] = []
            for hunk in edit.hunks:
                hunk = undo_habits(hunk, index, "").hunk
                hint = None if hunk.old_start is None else max(hunk.old_start - 1, 0)
                where = place(hunk, index, hint, taken) if hunk.old_lines else None
                if where is None:
                    break
                taken.append(where)
            else:
                fits.append((sum(p.level + 10 * p.fuzz for p in taken), rel))
        fits.sort()
        best = [rel for cost, rel in fits if cost == fits[0][0]] if fits else []
        if len(best) != 1:
            why = "match no environment file" if not best else \
                f"match several files equally well ({', '.join(best[:6])})"
            self.problems.append(f"{edit.label} name no file and {why}; name the file: "
                                 "'--- a/<file>' and '+++ b/<file>' before a diff's hunks, or "
                                 "the file's path on the line before a SEARCH block")
            return False
        edit.rel = best[0]
        self.repair(f"{edit.label} named no file; matched them to {best[0]} by content")
        return True


def _shown(raw: str) -> str:
    """A path as the model wrote it, without git's a/ b/ (messages quote the part to fix)."""
    return raw[2:] if raw.startswith(("a/", "b/")) else raw


def _merge(edits: list[_Edit]) -> list[_Edit]:
    """One edit per file: models sometimes repeat the header for every hunk."""
    merged: dict[str, _Edit] = {}
    for edit in edits:
        assert edit.rel is not None
        if edit.rel in merged:
            first = merged[edit.rel]
            if first.kind != "modify" or edit.kind != "modify":
                raise Rejected(f"{edit.rel} appears twice in the diff, once created or deleted; "
                               "give each file one part")
            first.hunks.extend(edit.hunks)
        else:
            merged[edit.rel] = edit
    return list(merged.values())


def _note_hunk_repairs(job: _Job, edit: _Edit) -> None:
    wrong = []
    for n, hunk in enumerate(edit.hunks, 1):
        if hunk.unprefixed:
            job.repair(f"read {hunk.unprefixed} line(s) without a leading space as context "
                       f"(hunk {n} of {edit.rel})")
        if hunk.counts_wrong:
            wrong.append(str(n))
    if wrong:
        job.repair(f"fixed hunk counts (hunk {', '.join(wrong)} of {edit.rel})")


def _protected_line_problems(job: _Job, rel: str, before: str, after: str | None) -> list[str]:
    wanted = job.protected_lines.get(rel, ())
    if not wanted:
        return []
    old = [content(x).strip() for x in split_keepends(before)]
    new = [content(x).strip() for x in split_keepends(after or "")]
    out = []
    for line in dict.fromkeys(wanted):
        if new.count(line) < old.count(line):
            out.append(f"the protected line {line!r} in {rel} was changed or removed; it must "
                       "stay exactly as it is. Change the code around it instead")
    return out


def _run(job: _Job, answer: str) -> PatchOutcome:
    edits = [e for e in job.edits(answer) if e.rel is not None or job.resolve_headerless(e)]
    edits = _merge(edits)
    for edit in edits:
        assert edit.rel is not None
        _note_hunk_repairs(job, edit)
        if is_protected(edit.rel, job.protected):
            verb = {"create": "create", "delete": "delete"}.get(edit.kind, "change")
            job.problems.append(f"{edit.rel} is protected: the patch may not {verb} it. Leave it "
                                "as it is and make the change in another file")
    job.problems.extend(job.shadowing([e.rel for e in edits if e.kind == "create" and e.rel]))
    job.fail_if_problems()
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for edit in edits:
        assert edit.rel is not None
        if edit.kind == "create":
            text = "\n".join(t for h in edit.hunks for _, t in h.ops)
            after[edit.rel] = text + "\n" if text else ""
            continue
        try:
            before[edit.rel] = read_text(job.tree.root / edit.rel)
        except UnicodeDecodeError:
            job.problems.append(f"{edit.rel} is not a text file; only text files can be patched")
            continue
        if edit.kind == "modify":
            patched = job.patched_text(edit, before[edit.rel])
            if patched is None:
                continue
            after[edit.rel] = patched
        job.problems.extend(_protected_line_problems(job, edit.rel, before[edit.rel],
                                                     after.get(edit.rel)))
    for rel in sorted(set(before) | set(after)):
        job.problems.extend(region_problems(rel, before.get(rel), after.get(rel), job.regions))
    job.fail_if_problems()
    changed = sorted(rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel))
    if not changed:
        raise Rejected("the diff changes nothing: its '+' lines equal the lines it removes. "
                       "Send a diff that makes the change the idea describes")
    modes = {rel: file_mode(job.tree.root / rel) for rel in before}
    diff = make_diff(before, after, modes)
    try:
        check = apply_diff(before, diff)
    except PatchError as exc:
        log.error("normalised diff does not re-apply (%s):\n%s", exc, diff)
        raise Rejected("internal error: the repaired diff did not re-apply; send the diff "
                       "again") from None
    if check != after:
        log.error("normalised diff re-applies to a different text:\n%s", diff)
        raise Rejected("internal error: the repaired diff did not reproduce the change; send "
                       "the diff again")
    return PatchOutcome(True, diff, None, tuple(job.repairs), tuple(changed), job.form)


#: the refusal of an answer the model's output limit cut off (stored, and sent back as the hint)
CUT_OFF_ERROR = (
    "The patch was not applied: the answer was cut off at the model's output limit "
    "(finish_reason 'length'), so the diff in it is incomplete. Send a shorter diff: only the "
    "hunks that change something, each with 3 lines of context, only the files the idea needs, "
    "and no explanation around it."
)


def prepare_patch(answer: str, env_dir: Path, protected: Sequence[str],
                  protected_lines: Mapping[str, Sequence[str]], *,
                  cut_off: bool = False, rules: DiffRules | None = None) -> PatchOutcome:
    """Extract, repair, validate and test-apply the change in a model's `answer`.

    Never raises for bad model input: the outcome's `error` says what to fix. `cut_off` (the
    model stopped at its output limit) refuses the answer whatever it holds: a diff cut at a
    hunk boundary looks whole and would apply half of the idea. `rules` (`DiffRules.of(env)`)
    adds the environment's protected regions and evaluator files; without it a new module
    that shadows a library or a protected file's import is still refused.
    """
    if cut_off:
        return PatchOutcome(False, None, CUT_OFF_ERROR, (), (), _form_of(answer))
    job = _Job(Path(env_dir), protected, protected_lines, rules)
    try:
        return _run(job, answer)
    except Rejected as exc:
        return PatchOutcome(False, None, exc.for_model(), tuple(job.repairs), (), job.form)
    except Exception as exc:  # a bug here must cost one attempt, not the whole search
        log.exception("prepare_patch failed on an answer")
        return PatchOutcome(False, None, f"The patch could not be processed ({type(exc).__name__}"
                            f": {exc}); send the change again as a plain unified diff.",
                            tuple(job.repairs), (), job.form)


def _form_of(answer: str) -> str:
    try:
        return extract(answer).form
    except Rejected:
        return "unified"
