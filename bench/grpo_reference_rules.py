"""The reference's r1-zero grading rules, RE-IMPLEMENTED BY READING — not the reference's code.

The GRPO environment's reference (NoviScl/Automated-AI-Researcher, env/grpo: drgrpo_grader.py,
evaluate.py, `r1_zero_reward_fn_eval` with fast=True) grades a response in three parts. This
module restates those rules from a reading of that file, in our own code, so that
bench/grpo_grader_agreement.py can compare our grader with them without the reference's code:

1. format: the response holds the literal "</think> <answer>" and "</answer>"; the answer is
   everything after the last "<answer>" with "</answer>" removed; when it holds \\boxed, the
   content of the last \\boxed{...} (an unbalanced box is wrong).
2. "mathd" string match: both sides normalised by Hendrycks' MATH rules (strip \\text{...},
   \\left/\\right, dfrac/tfrac, units, degrees, dollars, percent, spaces, a short "k =" prefix;
   fix \\frac12, \\sqrt2, a/b -> \\frac{a}{b}; 0.5 -> \\frac{1}{2}), then compared as strings.
3. "sympy" match: both normalised another way (units, "or"/"and" as commas, million/billion,
   LaTeX turned into plain text, mixed numbers, lower case, integer-valued floats as ints),
   equal strings; else tuples/intervals compared element by element, where two a/b fractions
   must match as strings, an integer gold needs an integer answer, and otherwise
   sympy.simplify(gold - answer) == 0 (skipped for expressions with more than two letters or
   with powers written ^{...} / ^(...)).

Approximations, stated: the reference turns LaTeX into text with pylatexenc, which is not
installed here; `_latex_to_text` below handles the macros MATH answers use (\\frac, \\sqrt, \\pi,
\\infty, \\cup, \\cdot, \\times, \\text, \\left/\\right, \\circ) and drops other macro names. Its list
of unit words (from MathQA) is given here in part (`UNIT_WORDS`), the words that occur in MATH
answers and model outputs (degree, mph, ft, mile, inch, hour, cm, ...), and the single letters
it also removes. The reference's one-second alarm is the caller's (the benchmark's) business.
"""

from __future__ import annotations

import re

import sympy
from sympy.parsing import sympy_parser

FORMAT_MARK = "</think> <answer>"

# Unit words removed as whole words (bounded by non-word characters) by the mathd rules; the
# reference also removes their plural with "s". A part of its list (see the module docstring).
UNIT_WORDS = [
    "east", "west", "degree", "mph", "kmph", "ft", "sq", "m", "mile", "monkey", "prime",
    "ratio", "rd", "gm", "lb", "tile", "per", "dm", "lt", "gain", "way", "men", "soldier",
    "pie", "excess", "st", "inches", "noon", "percent", "by", "gal", "kmh", "acre", "rise",
    "th", "sq", "mark", "toy", "coin", "gallon", "profit", "yr", "women", "feet", "am", "pm",
    "hr", "square", "rupee", "rounds", "cubic", "cc", "mtr", "ohm", "number", "day", "hour",
    "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "t", "a", "h", "c", "l",
    "s", "o",
]
# Units the sympy rules remove (with a plural ending and an optional power).
SYMPY_UNITS = [
    "degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week",
    "month", "year", "foot", "feet", "inch", "yard",
]


# ---------------------------------------------------------------- 1. format and boxed


def last_boxed_content(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}); None when it is not closed."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth, open_at = 0, None
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
            open_at = i if open_at is None else open_at
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                if not text.startswith("\\boxed{", start):
                    return None  # \fbox or \boxed x: the reference's unboxing refuses these
                return text[open_at + 1:i]
    return None


def response_answer(response: str) -> tuple[bool, str | None]:
    """(format_ok, answer): answer None when the format fails or a box is broken."""
    if FORMAT_MARK not in response or "</answer>" not in response:
        return False, None
    answer = response.split("<answer>")[-1].replace("</answer>", "")
    if "\\boxed" in answer:
        return True, last_boxed_content(answer)
    return True, answer


# ---------------------------------------------------------------- 2. mathd rules


def _mathd_fix_fracs(text: str) -> str:
    pieces = text.split("\\frac")
    out = pieces[0]
    for piece in pieces[1:]:
        out += "\\frac"
        if piece.startswith("{"):
            out += piece
            continue
        if len(piece) < 2:
            return text
        first, second, rest = piece[0], piece[1], piece[2:]
        out += "{" + first + "}" + (second + rest if second == "{" else "{" + second + "}" + rest)
    return out


def _mathd_a_slash_b(text: str) -> str:
    match = re.fullmatch(r"(-?\d+)/(-?\d+)", text)
    if match and text == f"{int(match.group(1))}/{int(match.group(2))}":
        return "\\frac{" + match.group(1) + "}{" + match.group(2) + "}"
    return text


def _mathd_fix_sqrt(text: str) -> str:
    pieces = text.split("\\sqrt")
    out = pieces[0]
    for piece in pieces[1:]:
        out += "\\sqrt" + (piece if piece.startswith("{") else "{" + piece[:1] + "}" + piece[1:])
    return out


def _mathd_strip(text: str) -> str:
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", text)
    text = text.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    text = text.replace("\\left", "").replace("\\right", "")
    no_unit = re.sub(r"\\text{.*?}$", "", text).strip()
    if no_unit and no_unit != text:
        text = no_unit
    for _ in range(2):
        for word in UNIT_WORDS + [w + "s" for w in UNIT_WORDS]:
            removed = re.sub(r"(^|\W)" + re.escape(word) + r"($|\W)", r"\1\2", text)
            if removed:
                text = removed
    text = text.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in text:
        parts = text.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("more than one unit")  # the reference's assert: left unnormalised
        text = parts[0]
    text = text.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]
    text = _mathd_fix_sqrt(text).replace(" ", "")
    text = _mathd_fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _mathd_a_slash_b(text)


def mathd_normalise(text: str) -> str:
    text = text.strip()
    try:
        inner = re.search(r"^\\text\{(?P<t>.+?)\}$", text)
        if inner:
            text = inner.group("t").strip()
        return _mathd_strip(text)
    except Exception:  # noqa: BLE001  (the reference returns the answer as it was)
        return text


# ---------------------------------------------------------------- 3. sympy rules


_SYMBOLS = {"\\pi": "pi", "\\infty": "inf", "\\cup": "U", "\\cdot": "*", "\\times": "*",
            "\\circ": "", "\\le": "<=", "\\ge": ">=", "\\ne": "!=", "\\%": "%", "\\$": "$"}


def _braced(text: str, at: int) -> tuple[str, int]:
    """The content of the {...} group (or single character) starting at `at`, and the end."""
    while at < len(text) and text[at] == " ":
        at += 1
    if at >= len(text):
        return "", at
    if text[at] != "{":
        return text[at], at + 1
    depth = 0
    for i in range(at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[at + 1:i], i + 1
    return text[at + 1:], len(text)


def _latex_to_text(text: str) -> str:
    """A small stand-in for pylatexenc's LaTeX-to-text (see the module docstring)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("\\frac", i) or text.startswith("\\dfrac", i) or text.startswith("\\tfrac", i):
            i = text.index("frac", i) + 4
            num, i = _braced(text, i)
            den, i = _braced(text, i)
            num, den = _latex_to_text(num), _latex_to_text(den)
            wrap = (lambda s: s if re.fullmatch(r"[\w.]+", s) else f"({s})")
            out.append(f" {wrap(num)}/{wrap(den)}")
        elif text.startswith("\\sqrt", i):
            body, i = _braced(text, i + 5)
            out.append(f"sqrt({_latex_to_text(body)})")
        elif text.startswith("\\text", i) or text.startswith("\\mathrm", i) or text.startswith("\\mbox", i):
            i = text.index("{", i) if "{" in text[i:] else len(text)
            body, i = _braced(text, i)
            out.append(body)
        elif text[i] == "\\":
            match = re.match(r"\\([A-Za-z]+|.)", text[i:])
            name = match.group(0)
            out.append(_SYMBOLS.get(name, "" if name[1:].isalpha() else name[1:]))
            i += len(name)
        elif text[i] in "{}":
            i += 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out).strip()


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _strip_thousands(text: str) -> str:
    while True:
        changed = re.sub(r"(\d),(\d\d\d)($|\D)", r"\1\2\3", text)
        if changed == text:
            return text
        text = changed


def _int_string(text: str) -> str | None:
    try:
        value = float(_strip_thousands(text))
    except ValueError:
        return None
    return str(int(value)) if abs(value - round(value)) <= 1e-7 else None


def sympy_normalise(text: str) -> str:
    inner = re.search(r"^\\text\{(?P<t>.+?)\}$", text)
    if inner:
        text = inner.group("t")
    text = text.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    text = text.replace(" or ", " , ").replace(" and ", " , ")
    text = text.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for unit in SYMPY_UNITS:
        text = re.sub(unit + r"(es)?(s)? *(\^[0-9]+)?", "", text)
    text = re.sub(r"\^ *\\circ", "", text)
    if text[:1] == "{" and text[-1:] == "}":
        text = text[1:-1]
    text = re.sub(r",\\! *", "", text)
    if _is_float(text) and abs(float(text) - round(float(text))) <= 1e-7:
        text = str(round(float(text)))
    if "\\" in text:
        text = _latex_to_text(text).replace("√", "sqrt").replace("π", "pi")
    text = re.sub(r"- *", "-", text)
    text = re.sub(r"([0-9]) +([0-9])", r"\1+\2", text)  # 7 3/4 -> 7+3/4
    text = text.replace(" ", "").replace("{", "").replace("}", "").lower()
    as_int = _int_string(text)
    return as_int if as_int is not None else text


def _split_tuple(text: str) -> list[str]:
    text = _strip_thousands(text)
    if not text:
        return []
    brackets = "()[]"
    if len(text) > 2 and text[0] in brackets and text[-1] in brackets and \
            not any(ch in text[1:-1] for ch in brackets):
        return [part.strip() for part in text[1:-1].split(",")]
    return [text]


def _sympy_allowed(expr: str) -> bool:
    letters = {ch for ch in expr.replace("sqrt", "").replace("frac", "") if ch.isalpha()}
    if len(letters) > 2 or "^{" in expr or "^(" in expr:
        return False
    return not (re.search(r"\^[0-9]+\^", expr) or re.search(r"\^[0-9][0-9]+", expr))


def _sympy_zero_difference(gold: str, given: str) -> bool:
    expr = f"({gold})-({given})"
    if not _sympy_allowed(expr):
        return False
    try:
        transformations = sympy_parser.standard_transformations + (
            sympy_parser.implicit_multiplication_application,)
        parsed = sympy_parser.parse_expr(expr.replace("^", "**"), transformations=transformations)
        return sympy.simplify(parsed) == 0
    except Exception:  # noqa: BLE001
        return False


def sympy_equal(given: str, gold: str) -> bool:
    gold_n, given_n = sympy_normalise(gold), sympy_normalise(given)
    if gold_n == given_n:
        return True
    if not given_n:
        return False
    gold_parts, given_parts = _split_tuple(gold_n), _split_tuple(given_n)
    if len(gold_parts) > 1 and (gold_n[0] != given_n[0] or gold_n[-1] != given_n[-1]):
        return False
    if len(gold_parts) != len(given_parts):
        return False
    fraction = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
    for g, a in zip(gold_parts, given_parts):
        if fraction.search(g) and fraction.search(a):
            ok = g == a  # unreduced fractions must match as written
        elif (_int_string(g) is not None) != (_int_string(a) is not None):
            ok = False  # an integer gold wants an integer answer
        else:
            ok = _sympy_zero_difference(g, a)
        if not ok:
            return False
    return True


def reference_correct(answer: str, gold: str) -> bool:
    if "\\boxed" in gold:
        gold = last_boxed_content(gold) or gold
    return mathd_normalise(answer) == mathd_normalise(gold) or sympy_equal(answer, gold)


def reference_grade(response: str, gold: str) -> tuple[bool, bool]:
    """(format_ok, correct) by the reference's rules as restated here."""
    format_ok, answer = response_answer(response)
    if answer is None:
        return format_ok, False
    return format_ok, reference_correct(answer, gold)
