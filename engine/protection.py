"""Diff rules that look at code, not at lines: protected regions and module shadowing.

`[protected_regions]` (environments/CONTRACT.md) names top-level definitions of a file —
`def name`, `class Name`, `NAME` (an assignment), `Class.method`. A patched file keeps each one
when the definition is still at the top level, once, with the same syntax tree as the
pristine one (`ast.dump` without positions: reformatting and comments are fine, a changed
decorator, default, docstring or body is not), and when nothing else in the file rebinds or
patches it. A copy kept in dead code (`if False:`, a function, a string) is not the region.

Shadowing: a new module in a folder that is a script's `sys.path[0]` is imported instead of the
library of the same name, so a diff may not add one named like a standard-library module, an
installed one, `sitecustomize`/`usercustomize`, or a module the protected code imports.
File-system case does not matter: importlib compares module file names case-sensitively even
on case-insensitive file systems (unless PYTHONCASEOK is set), so `JSON.py` never stands in
for `json`.

The installed modules are the engine interpreter's; a GPU host's may hold others. The names the
protected and evaluator files import are refused whatever a host has installed.
"""

from __future__ import annotations

import ast
import copy
import importlib.machinery
import importlib.metadata
import os
import pkgutil
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # environments.py imports this module
    from engine.environments import Environment

#: Told to the ideator and the coder with the protected regions.
SHADOW_RULE = (
    "New files must not be named like a module Python would import in place of the real one: "
    "a standard-library module (json.py), an installed package (torch/, math_verify.py), "
    "sitecustomize.py / usercustomize.py, or a module the protected files import. Give new "
    "modules their own names (e.g. my_schedule.py).")

_IDENT = re.compile(r"^[A-Za-z_]\w*$")
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")
_MUTATORS = frozenset({"update", "setdefault", "pop", "popitem", "clear", "append", "extend",
                       "insert", "remove", "sort", "reverse", "add", "discard",
                       "__setitem__", "__delitem__", "__setattr__", "__delattr__"})
_NAMESPACES = frozenset({"globals", "vars", "locals"})
_SITE_HOOKS = frozenset({"sitecustomize", "usercustomize"})


@dataclass(frozen=True)
class Region:
    """One `[protected_regions]` entry."""

    spec: str  # as written in environment.toml
    kind: str  # "def" | "class" | "name" | "method"
    name: str  # the module-level name (the class, for a method)
    member: str = ""  # the method, for kind "method"

    @property
    def shown(self) -> str:
        if self.kind == "method":
            return f"{self.name}.{self.member}"
        return {"def": "def ", "class": "class "}.get(self.kind, "") + self.name


def parse_region(spec: str) -> Region:
    """`def name`, `async def name`, `class Name`, `NAME` or `Class.method`; ValueError else."""
    words = spec.split()
    if words[:1] == ["async"]:
        words = words[1:]
    kind = words[0] if len(words) == 2 and words[0] in ("def", "class") else None
    target = words[-1] if words else ""
    dotted = target.split(".")
    if kind != "class" and len(dotted) == 2 and all(_IDENT.match(p) for p in dotted) \
            and len(words) == (2 if kind else 1):
        return Region(spec, "method", dotted[0], dotted[1])
    if _IDENT.match(target) and (kind or len(words) == 1):
        return Region(spec, kind or "name", target)
    raise ValueError(f"holds {spec!r}, which is not a definition: write `def name`, "
                     "`class Name`, `NAME` (a top-level assignment) or `Class.method`")


@dataclass(frozen=True)
class DiffRules:
    """What the patch check needs from an environment beyond its protected files and lines."""

    regions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: files the evaluation stage runs from: what they import may not be shadowed
    evaluator_files: tuple[str, ...] = ()

    @classmethod
    def of(cls, env: Environment) -> DiffRules:
        files = tuple(env.evaluator_files()) if env.evaluation is not None else ()
        return cls(dict(env.protected_regions), files)


# -- reading a module ------------------------------------------------------------------------
def _module_scope(body: Sequence[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run in the namespace whose body this is: the top level and the blocks
    of its if/for/while/try/with/match statements, not function or class bodies."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (*_DEFS, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            yield from _module_scope(getattr(stmt, name, None) or [])
        for handler in getattr(stmt, "handlers", None) or []:
            yield from _module_scope(handler.body)
        for case in getattr(stmt, "cases", None) or []:
            yield from _module_scope(case.body)


def _names(target: ast.AST | None) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_names(t) for t in target.elts)) if target.elts else set()
    if isinstance(target, ast.Starred):
        return _names(target.value)
    return set()


def _own_fields(stmt: ast.stmt) -> Iterator[ast.AST]:
    """The statement's own nodes, without the blocks nested in it."""
    for name, value in ast.iter_fields(stmt):
        if name in _BLOCKS:
            continue
        for node in value if isinstance(value, list) else [value]:
            if isinstance(node, ast.AST):
                yield node


def _binds(stmt: ast.stmt) -> set[str]:
    """The names `stmt` itself binds in its namespace."""
    if isinstance(stmt, (*_DEFS, ast.ClassDef)):
        return {stmt.name}
    out: set[str] = set()
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            out |= _names(target)
    elif isinstance(stmt, (ast.AugAssign, ast.For, ast.AsyncFor)) or (
            isinstance(stmt, ast.AnnAssign) and stmt.value is not None):
        out |= _names(stmt.target)
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        for item in stmt.items:
            out |= _names(item.optional_vars)
    elif isinstance(stmt, ast.Import):
        out |= {a.asname or a.name.partition(".")[0] for a in stmt.names}
    elif isinstance(stmt, ast.ImportFrom):
        out |= {a.asname or a.name for a in stmt.names if a.name != "*"}
    elif isinstance(stmt, ast.Delete):
        for target in stmt.targets:
            out |= _names(target)
    elif isinstance(stmt, (ast.Try, getattr(ast, "TryStar", ast.Try))):
        out |= {h.name for h in stmt.handlers if h.name}
    elif isinstance(stmt, ast.Match):
        for case in stmt.cases:
            for node in ast.walk(case.pattern):
                if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
                    out.add(node.name)
                if isinstance(node, ast.MatchMapping) and node.rest:
                    out.add(node.rest)
    for node in _own_fields(stmt):
        for sub in ast.walk(node):
            if isinstance(sub, ast.NamedExpr):
                out |= _names(sub.target)
    return out


def _head(stmt: ast.stmt) -> str:
    """A statement's syntax without its nested blocks (a `for` loop's header, say)."""
    if isinstance(stmt, (*_DEFS, ast.ClassDef)):
        return ast.dump(stmt)
    shallow = copy.copy(stmt)
    for name in _BLOCKS:
        if hasattr(shallow, name):
            setattr(shallow, name, [])
    return ast.dump(shallow)


def _chain(node: ast.AST) -> list[str]:
    """`a.b[0].c` -> ["a", "b", "[]", "c"]; `f().x` -> ["f", "()", "x"]."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [*_chain(node.value), node.attr]
    if isinstance(node, ast.Subscript):
        return [*_chain(node.value), "[]"]
    if isinstance(node, ast.Call):
        return [*_chain(node.func), "()"]
    return ["?"]


def _const(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _what(stmt: ast.stmt) -> str:
    kinds = {ast.FunctionDef: "a def", ast.AsyncFunctionDef: "a def", ast.ClassDef: "a class",
             ast.Import: "an import", ast.ImportFrom: "an import", ast.For: "a for loop",
             ast.AsyncFor: "a for loop", ast.With: "a with statement",
             ast.AsyncWith: "a with statement", ast.Delete: "del", ast.Try: "an except clause",
             ast.Match: "a match case", ast.AugAssign: "an assignment"}
    return kinds.get(type(stmt), "an assignment")


def _dump(value: object) -> str:
    """`ast.dump` (no positions) of a node, a list of nodes or None."""
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    return ast.dump(value) if isinstance(value, ast.AST) else repr(value)


def _short(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 60 else text[:57] + "..."


# -- protected regions -----------------------------------------------------------------------
@dataclass
class _Found:
    node: ast.stmt | None  # the region's statement when found exactly once
    count: int
    owner: ast.ClassDef | None = None  # the class, for a method


def _find(tree: ast.Module, region: Region) -> _Found:
    if region.kind == "def":
        hits = [s for s in tree.body if isinstance(s, _DEFS) and s.name == region.name]
    elif region.kind == "name":
        hits = [s for s in tree.body if isinstance(s, (ast.Assign, ast.AnnAssign))
                and region.name in _binds(s)]
    else:
        hits = [s for s in tree.body if isinstance(s, ast.ClassDef) and s.name == region.name]
    if region.kind != "method" or len(hits) != 1:
        return _Found(hits[0] if len(hits) == 1 else None, len(hits))
    owner = hits[0]
    assert isinstance(owner, ast.ClassDef)
    methods = [s for s in owner.body if isinstance(s, _DEFS) and s.name == region.member]
    return _Found(methods[0] if len(methods) == 1 else None, len(methods), owner)


def _where(region: Region, rel: str) -> str:
    if region.kind == "method":
        return f"directly in the body of `class {region.name}` at the top level of {rel}"
    return f"at the top level of {rel}"


def _absent(region: Region, rel: str, found: _Found) -> str:
    if found.count > 1:
        return f"is defined {found.count} times {_where(region, rel)}"
    if region.kind == "method" and found.owner is None:
        return f"is gone: `class {region.name}` is not defined once at the top level of {rel}"
    return (f"is not defined {_where(region, rel)} any more (a copy inside `if`, `try`, a "
            "function or a string does not count)")


def missing_region(rel: str, text: str, spec: str) -> str | None:
    """Why `spec` cannot be protected in the pristine `text` of `rel`, or None (load check)."""
    region = parse_region(spec)
    try:
        tree = ast.parse(text, filename=rel)
    except SyntaxError as exc:
        return f"names {rel}, which does not parse as Python (line {exc.lineno}: {exc.msg})"
    found = _find(tree, region)
    if found.node is None:
        return f"holds {spec!r}, which {_absent(region, rel, found)}"
    return None


def _docstring(node: ast.AST) -> str | None:
    return ast.get_docstring(node, clean=False) if isinstance(node, (*_DEFS, ast.ClassDef)) \
        else None


def _what_changed(old: ast.stmt, new: ast.stmt) -> str:
    if not isinstance(old, (*_DEFS, ast.ClassDef)):
        return "a different assignment"
    if type(old) is not type(new):
        return "a different kind of definition"
    parts = []
    fields = [("decorator_list", "decorators")]
    fields += [("bases", "bases"), ("keywords", "metaclass or keywords")] \
        if isinstance(old, ast.ClassDef) else [("args", "arguments or defaults"),
                                               ("returns", "return annotation")]
    for name, label in fields:
        if _dump(getattr(old, name)) != _dump(getattr(new, name)):
            parts.append(label)
    doc_old, doc_new = _docstring(old), _docstring(new)
    if doc_old != doc_new:
        parts.append("docstring")
    body_old = old.body[1:] if doc_old is not None else old.body
    body_new = new.body[1:] if doc_new is not None else new.body
    if [ast.dump(s) for s in body_old] != [ast.dump(s) for s in body_new]:
        parts.append("body")
    return "different " + ", ".join(parts or ["definition"])


@dataclass(frozen=True)
class _Target:
    """What patching a region looks like from one file."""

    region: Region
    roots: frozenset[str]  # local names that are the region's object (or its class)
    modules: frozenset[str]  # local names that are the region's module
    node: ast.stmt | None = None  # the region itself (same file), not a site
    owner: ast.ClassDef | None = None


def _module_names(tree: ast.Module, module: str) -> tuple[set[str], dict[str, str]]:
    """(local names of `module` or `__main__`, local name -> name imported from them)."""
    mods: set[str] = set()
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in (module, "__main__"):
                    mods.add(a.asname or a.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 \
                and node.module in (module, "__main__"):
            imported.update({a.asname or a.name: a.name for a in node.names})
    return mods, imported


def _sites(tree: ast.Module, t: _Target) -> list[tuple[int, str, str]]:
    """(line, what, key) of everything that rebinds or patches the region in this file."""
    r = t.region
    out: list[tuple[int, str, str]] = []

    def add(node: ast.AST, what: str) -> None:
        out.append((getattr(node, "lineno", 0), what, ast.dump(node)))

    if t.node is not None:  # the region's own file: its namespace
        for stmt in _module_scope(tree.body):
            if stmt is not t.node and stmt is not t.owner and r.name in _binds(stmt):
                out.append((stmt.lineno, f"binds `{r.name}` again ({_what(stmt)})", _head(stmt)))
            if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names) \
                    and stmt.lineno > t.node.lineno:
                add(stmt, f"imports * from `{stmt.module}`, which may rebind `{r.name}`")
        if t.owner is not None:
            for stmt in _module_scope(t.owner.body):
                if stmt is not t.node and r.member in _binds(stmt):
                    out.append((stmt.lineno, f"binds `{r.shown}` again in the class body",
                                _head(stmt)))

    def hits(chain: list[str]) -> bool:
        """Whether an attribute/item chain reaches into the region."""
        if chain[0] in t.roots:
            rest = chain[1:]
        elif chain[0] in t.modules:
            rest = chain[2:] if len(chain) > 1 and chain[1] == r.name else None
        elif chain[:3] == ["sys", "modules", "[]"]:
            rest = chain[4:] if len(chain) > 3 and chain[3] == r.name else None
        else:
            return False
        if rest is None:
            return False
        if r.kind == "method":
            return bool(rest) and rest[0] in (r.member, "__dict__")
        return True

    def namespace_key(node: ast.AST) -> bool:  # globals()["NAME"] / vars()[...]
        return (t.node is not None and isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id in _NAMESPACES
                and _const(node.slice) in (r.name, None))

    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            targets = [node.optional_vars]
        elif isinstance(node, ast.Global) and r.name in node.names and t.node is not None:
            add(node, f"declares `global {r.name}` in a function, which lets it rebind it")
        elif isinstance(node, ast.Call):
            chain = _chain(node.func)
            if chain in (["setattr"], ["delattr"], ["builtins", "setattr"],
                         ["builtins", "delattr"], ["object", "__setattr__"]) and node.args:
                first, attr = node.args[0], _const(node.args[1]) if len(node.args) > 1 else None
                reaches = hits([*_chain(first), attr or r.member or r.name]) if \
                    r.kind == "method" else hits(_chain(first))
                names_it = attr in (r.name, None) and (_chain(first)[0] in t.modules or
                                                       _chain(first)[:3] == ["sys", "modules",
                                                                             "[]"])
                if reaches or names_it:
                    add(node, f"calls `{_short(node)}`")
            elif len(chain) >= 2 and chain[-1] in _MUTATORS and (
                    hits(chain[:-1]) or chain[:-1] == ["globals", "()"]):
                add(node, f"changes it in place (`{_short(node)}`)")
        flat: list[ast.AST] = []
        while targets:
            target = targets.pop()
            if isinstance(target, (ast.Tuple, ast.List)):
                targets.extend(target.elts)
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
            else:
                flat.append(target)
        for target in flat:
            if isinstance(target, (ast.Attribute, ast.Subscript)) and (
                    hits(_chain(target)) or namespace_key(target)):
                add(target, f"assigns to or deletes `{_short(target)}`")
    return out


def _target(tree: ast.Module, region: Region, rel: str, file_rel: str,
            found: _Found | None) -> _Target:
    module = rel.removesuffix(".py").replace("/", ".")
    mods, imported = _module_names(tree, module)
    own = {region.name} if file_rel == rel else set()
    roots = own | {local for local, name in imported.items() if name == region.name}
    if found is None:
        return _Target(region, frozenset(roots), frozenset(mods))
    return _Target(region, frozenset(roots), frozenset(mods), found.node, found.owner)


def region_problems(rel: str, before: str | None, after: str | None,
                    regions: Mapping[str, Sequence[str]]) -> list[str]:
    """What the change of file `rel` (None: absent) does to the protected regions: to those of
    `rel` itself, and any patching of other files' regions from `rel` (`import train;
    train.save_checkpoint = ...`)."""
    if not rel.endswith(".py") or not any(regions.values()):
        return []
    own = [parse_region(s) for s in regions.get(rel, ())]
    if own and after is None:
        shown = ", ".join(f"`{r.shown}`" for r in own)
        return [(f"{rel} holds protected regions ({shown}): the patch may not delete it. "
                 "Keep the file and change code around them")]
    if after is None:
        return []
    try:
        new_tree = ast.parse(after, filename=rel)
    except SyntaxError as exc:
        if not own:
            return []  # not our rule to enforce; the run will show the error
        return [(f"{rel} does not parse as Python after the patch (line {exc.lineno}: "
                 f"{exc.msg}), so its protected regions cannot be checked; send a diff that "
                 f"leaves {rel} valid Python")]
    try:
        old_tree = ast.parse(before or "", filename=rel)
    except SyntaxError:
        old_tree = ast.Module(body=[], type_ignores=[])
    problems: list[str] = []
    for region_rel, specs in regions.items():
        for spec in specs:
            region = parse_region(spec)
            if region_rel != rel:
                problems.extend(_patched_from(rel, region_rel, region, old_tree, new_tree))
                continue
            old = _find(old_tree, region)
            new = _find(new_tree, region)
            fix = (f"keep `{region.shown}` as it is {_where(region, rel)} and put new code "
                   "around it")
            if new.node is None:
                problems.append(f"{rel}: the protected region `{region.shown}` "
                                f"{_absent(region, rel, new)}; {fix}")
                continue
            if old.node is None:
                continue  # the load check reports a region the pristine file lacks
            if ast.dump(old.node) != ast.dump(new.node):
                problems.append(f"{rel}: the protected region `{region.shown}` was changed "
                                f"({_what_changed(old.node, new.node)}); {fix} (reformatting "
                                "is fine, a different definition is not)")
                continue
            if old.owner is not None and new.owner is not None and any(
                    _dump(getattr(old.owner, f)) != _dump(getattr(new.owner, f))
                    for f in ("decorator_list", "bases", "keywords")):
                problems.append(f"{rel}: the protected region `{region.shown}`: the decorators "
                                f"or bases of `class {region.name}` changed, which changes "
                                f"what `{region.shown}` is; keep the class header as it is")
                continue
            added = _added(_sites(old_tree, _target(old_tree, region, rel, rel, old)),
                           _sites(new_tree, _target(new_tree, region, rel, rel, new)))
            if added:
                problems.append(f"{rel}: the protected region `{region.shown}` is kept but "
                                f"rebound or patched elsewhere ({added}); {fix}, and do not "
                                "rebind, wrap, decorate or patch it")
    return problems


def _patched_from(rel: str, region_rel: str, region: Region, old_tree: ast.Module,
                  new_tree: ast.Module) -> list[str]:
    added = _added(_sites(old_tree, _target(old_tree, region, region_rel, rel, None)),
                   _sites(new_tree, _target(new_tree, region, region_rel, rel, None)))
    if not added:
        return []
    return [(f"{rel} patches the protected region `{region.shown}` of {region_rel} "
             f"({added}); leave `{region.shown}` as {region_rel} defines it")]


def _added(old: list[tuple[int, str, str]], new: list[tuple[int, str, str]]) -> str:
    """The sites of `new` that `old` does not already have, as 'line N: what; ...'."""
    have = Counter(key for _, _, key in old)
    extra = []
    for line, what, key in sorted(new):
        if have[key]:
            have[key] -= 1
        else:
            extra.append(f"line {line} {what}")
    return "; ".join(extra)


# -- module shadowing ------------------------------------------------------------------------
def imported_modules(text: str, rel: str) -> set[str]:
    """Every module `text` may import (dotted, with their parents): import statements at any
    depth, relative ones resolved from `rel`'s folder, and constant `importlib.import_module`
    / `__import__` calls. A file that does not parse imports nothing here."""
    try:
        tree = ast.parse(text, filename=rel)
    except SyntaxError:
        return set()
    package = rel.split("/")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level <= len(package) + 1 \
                    else []
                stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                stem = node.module or ""
            if stem:
                found.add(stem)
                found.update(f"{stem}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call) and _chain(node.func)[-1] in ("import_module",
                                                                      "__import__"):
            name = _const(node.args[0]) if node.args else None
            if name and not name.startswith("."):
                found.add(name)
    out = set()
    for name in found:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


@cache
def installed_modules() -> dict[str, str]:
    """Top-level module names the engine's interpreter can import -> why (for messages)."""
    out: dict[str, str] = {}
    cwd = os.path.realpath(os.getcwd())
    # the engine's working folder is on sys.path when it runs as a script; not "installed"
    paths = [p for p in sys.path if p and os.path.realpath(p) != cwd]
    for info in pkgutil.iter_modules(paths):
        out[info.name] = "an installed module"
    for name, dists in importlib.metadata.packages_distributions().items():
        out[name] = f"an installed package ({', '.join(sorted(set(dists)))})"
    for name in sys.builtin_module_names:
        out[name] = "a module built into Python"
    for name in sys.stdlib_module_names:
        out[name] = "a standard-library module"
    for name in _SITE_HOOKS:
        out[name] = "Python runs it at start-up, before any of the environment's code"
    return out


def _module_of(name: str) -> str | None:
    """`x.py` -> `x`; `x.cpython-311-x86_64-linux-gnu.so` -> `x`; `notes.txt` -> None."""
    suffixes = sorted({*importlib.machinery.all_suffixes(), ".py", ".pyw", ".pyc", ".so",
                       ".pyd"}, key=len, reverse=True)
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = name[:-len(suffix)]
            return stem if _IDENT.match(stem) else None
    return None


def shadow_problems(new_files: Iterable[str], existing: Iterable[str],
                    guarded: Mapping[str, str], roots: Iterable[str] = ("",)) -> list[str]:
    """Refusals for new files that would stand in for a module.

    `existing`: the environment's files (a folder they fill is not new); `guarded`: module ->
    which protected file imports it; `roots`: folders that are a script's `sys.path[0]`
    ("" is the environment folder).
    """
    files = set(existing)
    folders = {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}
    problems: list[str] = []
    for rel in new_files:
        if rel.endswith(".pth"):
            problems.append(f"the new file {rel} is a .pth file, which makes Python run code "
                            "or extend its import path at start-up; patches may not add one")
            continue
        for root in sorted(set(roots)):
            if root and not rel.startswith(root + "/"):
                continue
            parts = rel[len(root) + 1 if root else 0:].split("/")
            top = parts[0] if len(parts) > 1 else _module_of(parts[0])
            prefix = f"{root}/{parts[0]}" if root else parts[0]
            if len(parts) > 1 and prefix in folders and parts[1:] != ["__init__.py"]:
                # a file in a folder that exists: only the module it is counts
                module = _module_of(parts[-1])
                dotted = ".".join([*parts[:-1], module]) if module else None
                if dotted and dotted in guarded:
                    problems.append(_shadowing(rel, dotted, guarded[dotted]))
                    break
                continue
            if not top or not _IDENT.match(top):
                continue
            why = guarded.get(top) or installed_modules().get(top)
            if why:
                problems.append(_shadowing(rel, top, why))
                break
    return problems


def _shadowing(rel: str, module: str, why: str) -> str:
    return (f"the new file {rel} would shadow the module `{module}` ({why}): Python would "
            f"import it instead of the real one. Give the new module a name of its own "
            f"(e.g. `my_{module.rpartition('.')[2]}.py`) and leave `{module}` alone")


def guarded_modules(texts: Mapping[str, str], label: Mapping[str, str]) -> dict[str, str]:
    """module -> "imported by <file> (<label>)" for the protected files' imports."""
    out: dict[str, str] = {}
    for rel, text in sorted(texts.items()):
        for module in sorted(imported_modules(text, rel)):
            out.setdefault(module, f"imported by {rel}, {label.get(rel, 'a protected file')}")
    return out
