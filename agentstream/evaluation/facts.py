"""Facts in text (numbers, identifiers, proper names) and the corpus a run's facts must come from.

Deterministic and bounded: text is read up to `SCAN_CHARS`, numbers are compared in one canonical
form (1,200 = 1200 = 1200.00), everything else case-insensitively as a substring of what the run
has seen. Small integers (counts, ordinals, clock parts) are too common to mean anything and are
ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

SCAN_CHARS = 20_000  # of a text whose facts are judged; the rest of a huge one is not read
CORPUS_CHARS = 200_000  # of one text facts are looked up in (results over the offload threshold are previews)
SMALL_INT = 100  # integers below this are not facts
# Nor are unit factors a model knows without being told (cents, thousands, minutes, days, bytes).
UNIT_FACTORS = frozenset({"100", "1000", "10000", "100000", "1000000", "365", "1440", "3600", "86400", "1024"})
_NUMBER = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")
_TOKEN = re.compile(r"[\w][\w./:@+-]*[\w]|\w")
_WORD = re.compile(r"(?<![\w'\u2019-])[^\W\d_][\w'\u2019-]*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*)$")


def canonical_number(text: str) -> str | None:
    """`text` as a canonical decimal ("1,200.50" -> "1200.5"), None when it is not a fact (a small
    integer) or not a number."""
    raw = text.replace(",", "").strip()
    negative = raw.startswith("-")
    raw = raw.lstrip("-")
    whole, _, frac = raw.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        return None
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    if not frac and ((len(whole) < 4 and int(whole) < SMALL_INT) or whole in UNIT_FACTORS):
        return None
    return ("-" if negative else "") + whole + ("." + frac if frac else "")


def number_of(value: int | float) -> str | None:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return canonical_number(str(int(value)))
        return canonical_number(repr(value))  # 1e+308, nan, inf: not a number any text would hold
    return canonical_number(str(value))


@dataclass(frozen=True, slots=True)
class Facts:
    numbers: tuple[str, ...]  # canonical
    identifiers: tuple[str, ...]  # tokens with both letters and digits, folded
    names: tuple[str, ...]  # runs of two or more capitalised words, folded


@lru_cache(maxsize=4096)
def facts_in(text: str) -> Facts:
    text = text[:SCAN_CHARS]
    numbers = tuple(dict.fromkeys(n for m in _NUMBER.finditer(text) if (n := canonical_number(m.group())) is not None))
    identifiers = tuple(
        dict.fromkeys(
            t.casefold()
            for t in _TOKEN.findall(text)
            if len(t) >= 4 and any(c.isdigit() for c in t) and any(c.isalpha() for c in t)
        )
    )
    return Facts(numbers, identifiers, _names(text))


def _names(text: str) -> tuple[str, ...]:
    """Runs of two or more capitalised words (any script) with only spaces between them; a
    sentence's first word is capitalised whatever it is, so it does not start a name."""
    names: list[str] = []
    run: list[str] = []
    run_start, last_end = 0, -1

    def flush() -> None:
        words = run[1:] if _SENTENCE_START.search(text[max(0, run_start - 200) : run_start]) else run
        if len(words) >= 2:
            names.append(" ".join(words).casefold())

    for m in _WORD.finditer(text):
        word = m.group()
        if run and word[0].isupper() and text[last_end : m.start()] in (" ", "\t", "  "):
            run.append(word)
        else:
            if run:
                flush()
            run, run_start = ([word], m.start()) if word[0].isupper() else ([], 0)
        last_end = m.end()
    if run:
        flush()
    return tuple(dict.fromkeys(names))


@lru_cache(maxsize=4096)
def _seen(text: str) -> tuple[str, frozenset[str]]:
    """What one text of the corpus offers: its folded text, and its numbers (small ones included:
    a value is compared only once it is known to be a fact)."""
    text = text[:CORPUS_CHARS]
    numbers = frozenset(n for m in _NUMBER.finditer(text) if (n := _any_number(m.group())) is not None)
    return " ".join(text.casefold().split()), numbers


def _any_number(text: str) -> str | None:
    raw = text.replace(",", "")
    negative = raw.startswith("-")
    whole, _, frac = raw.lstrip("-").partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    return ("-" if negative else "") + whole + ("." + frac if frac else "")


class Corpus:
    """What a run has seen: its task, its observations, its tenant's declared constants.
    `partial`: some of it cannot be seen here (an offloaded blob, a compacted prompt), so a fact
    not found is unknown, not absent. Read on first use: most steps have no fact to look up."""

    __slots__ = ("_numbers", "_raw", "_texts", "partial")

    def __init__(self, raw: tuple[str, ...], partial: bool = False) -> None:
        self._raw, self.partial = raw, partial
        self._texts: tuple[str, ...] | None = None
        self._numbers: frozenset[str] = frozenset()

    @staticmethod
    def of(texts: Iterable[str], *, partial: bool = False) -> Corpus:
        return Corpus(tuple(t for t in texts if t), partial)

    def _load(self) -> tuple[str, ...]:
        if self._texts is None:
            folded: list[str] = []
            numbers: set[str] = set()
            for text in self._raw:
                lowered, found = _seen(text)
                folded.append(lowered)
                numbers |= found
            self._texts, self._numbers = tuple(folded), frozenset(numbers)
        return self._texts

    def has_text(self, value: str) -> bool:
        needle = " ".join(value.casefold().split())
        return bool(needle) and any(needle in text for text in self._load())

    def has_number(self, canonical: str) -> bool:
        self._load()
        return canonical in self._numbers

    def missing(self, facts: Facts) -> list[str]:
        """The facts this corpus does not hold, in the order found."""
        out = [n for n in facts.numbers if not self.has_number(n)]
        out += [i for i in facts.identifiers if not self.has_text(i) and not _numeric_part_seen(self, i)]
        out += [n for n in facts.names if not self.has_text(n)]
        return out


def _numeric_part_seen(corpus: Corpus, identifier: str) -> bool:
    # "1200usd" or "12.5k" are a number with a unit: the number is the fact
    digits = re.fullmatch(r"(-?[\d.,]+)([^\W\d]{1,4})", identifier)
    if digits is None:
        return False
    number = _any_number(digits.group(1)) if re.fullmatch(r"-?[\d,]+(?:\.\d+)?", digits.group(1)) else None
    return number is not None and corpus.has_number(number)
