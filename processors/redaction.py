"""PII redaction of transcript text, before anything is stored or leaves the worker.

Pure: text in, the redacted text and what was redacted out. Each finding keeps its span in
the *original* text (character offsets), so that word timestamps can locate it (e.g. to silence
the same span in a kept recording). Found, in spoken and in written forms:

* ``[card]``: 13-19 digits that pass the Luhn check ("4111 1111 1111 1111", "four one one one
  ...", "double one", "4-1-1-1 ...");
* ``[cvv]``: 3-4 digits within a few words after "security code", "CVV", "CVC" or "CV2";
* ``[ssn]``: a US social security number: 3-2-4 digits as written ("123-45-6789"), or 9 digits
  within a few words after "social security";
* ``[phone]``: 10 digits, 11 starting with 1 or 12 starting with 44, or a "+" number of 8-15
  digits;
* ``[email]``: written addresses and spoken ones ("john dot smith at example dot com");
* ``[iban]``: an IBAN (country, check digits, 11-30 more characters) that passes mod 97.

Other numbers (amounts, times, order numbers) are kept: a supervisor needs them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
               "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}  # fmt: skip
REPEAT_WORDS = {"double": 2, "triple": 3}
CVV_CUES = ("security code", "cvv", "cvc", "cv2", "card verification")
SSN_CUES = ("social security", "ssn")
CUE_WORDS = 6  # how far after a cue its number may start, in words

_TOKEN = re.compile(r"\+?\d+|[A-Za-z]+(?:'[a-z]+)?")
_SEPARATOR = re.compile(r"^[\s\-./,()]*$")  # what may stand between the digits of one number
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_SPOKEN_EMAIL = re.compile(
    r"\b[a-z0-9]+(?:\s+(?:dot|underscore|dash)\s+[a-z0-9]+)*\s+at\s+[a-z0-9]+"
    r"(?:\s+dot\s+[a-z0-9]+)*\s+dot\s+(?:com|net|org|edu|gov|io|co|uk|de|fr|info|biz)\b",
    re.IGNORECASE,
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_SSN_WRITTEN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")


@dataclass(frozen=True)
class Finding:
    """One redacted span: its kind (the tag's name) and its offsets in the original text."""

    kind: str
    start: int
    end: int


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "")
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


@dataclass
class _Run:
    """Consecutive number words and numerals: their digits and their span."""

    digits: str
    start: int
    end: int
    plus: bool = False


def _digit_runs(text: str) -> list[_Run]:
    runs: list[_Run] = []
    cur: _Run | None = None
    repeat = 1
    for m in _TOKEN.finditer(text):
        word = m.group().lower()
        joined = cur is not None and _SEPARATOR.match(text[cur.end : m.start()]) is not None
        if word in REPEAT_WORDS:  # "double one": the next digit twice
            if not joined:
                cur = _Run("", m.start(), m.end())
                runs.append(cur)
            assert cur is not None
            cur.end, repeat = m.end(), REPEAT_WORDS[word]
            continue
        digit = word.lstrip("+") if word.lstrip("+").isdigit() else DIGIT_WORDS.get(word)
        if digit is None or (word in ("o", "oh") and not joined):
            cur, repeat = None, 1  # "o"/"oh" count as zero only inside a number
            continue
        if not joined:  # a new number; "(555) ..." starts at its bracket
            start = m.start() - 1 if text[m.start() - 1 : m.start()] == "(" else m.start()
            cur = _Run("", start, m.end(), plus=word.startswith("+"))
            runs.append(cur)
        assert cur is not None
        cur.digits += digit * repeat
        cur.end = m.end()
        repeat = 1
    return runs


def _cue_before(text: str, start: int, cues: tuple[str, ...]) -> bool:
    before = " ".join(text[:start].lower().split()[-(CUE_WORDS + 2) :])
    return any(cue in before for cue in cues)


_AMOUNT = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # "1,250,000": an amount, not digits


def _number_kind(text: str, run: _Run) -> str | None:
    d, n = run.digits, len(run.digits)
    if _AMOUNT.fullmatch(text[run.start : run.end]):
        return None
    if 13 <= n <= 19 and luhn_ok(d):
        return "card"
    if n in (3, 4) and _cue_before(text, run.start, CVV_CUES):
        return "cvv"
    if n == 9 and _cue_before(text, run.start, SSN_CUES):
        return "ssn"
    if run.plus and 8 <= n <= 15:
        return "phone"
    if n == 10 or (n == 11 and d[0] == "1") or (n == 12 and d.startswith("44")):
        return "phone"
    return None


def find_pii(text: str) -> list[Finding]:
    """Every PII span of ``text``, in order, none overlapping (the earlier or longer wins)."""
    found = [Finding("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
    found += [Finding("email", m.start(), m.end()) for m in _SPOKEN_EMAIL.finditer(text)]
    found += [Finding("iban", m.start(), m.end()) for m in _IBAN.finditer(text)
              if iban_ok(m.group())]  # fmt: skip
    found += [Finding("ssn", m.start(), m.end()) for m in _SSN_WRITTEN.finditer(text)]
    for run in _digit_runs(text):
        kind = _number_kind(text, run)
        if kind:
            found.append(Finding(kind, run.start, run.end))
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (f.start, -(f.end - f.start))):
        if not kept or f.start >= kept[-1].end:
            kept.append(f)
    return kept


def redact(text: str) -> tuple[str, list[Finding]]:
    """``text`` with every PII span replaced by its tag (``[card]``, ``[phone]`` ...), and the
    spans, in the original text's offsets."""
    found = find_pii(text)
    out, at = [], 0
    for f in found:
        out.append(text[at : f.start])
        out.append(f"[{f.kind}]")
        at = f.end
    out.append(text[at:])
    return "".join(out), found


def redaction_counts(findings: list[Finding]) -> dict[str, int]:
    """How many spans of each kind were redacted (a call's count is the sum of its segments')."""
    return dict(Counter(f.kind for f in findings))
