"""Data-flow taint: does a proposed call carry data that this run read from a private tool?

The gate fingerprints what a run reads. A fingerprint is a hash of `WINDOW` consecutive letters
and digits of a text after it is folded (percent- and HTML-decoded, NFKC, case-folded, everything
but letters and digits dropped), so `ACCT-1234-5678`, `acct12345678` and `ACCT%2D1234%2D5678` are
the same data. Results of the tools a tenant marks private are the *private* fingerprints; the
user's task and the results of every other tool are *public* ones: text the run was given in the
open is no secret (a benign search for a term the user typed, or that a public page showed, stays
allowed even when a private email used the same term). A call of an egress-capable tool leaks when
an argument holds a window that is private and not public.

State is one JSON-able dict per run, a function of the journal alone (replay rebuilds it), bounded
by `MAX_PRIVATE` and `MAX_PUBLIC` fingerprints. Both bounds fail closed: past `MAX_PRIVATE` the
run is `overflow` and every egress call needs a person; past `MAX_PUBLIC` nothing more is
declassified. Hashes, not text: the store keeps no copy of the data (the journal already has it).

Not caught: data split across arguments or into pieces shorter than `WINDOW`, or re-encoded
(base64, hex, a translation, a summary); a private value shorter than `WINDOW` characters.
"""

from __future__ import annotations

import hashlib
import html
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson

WINDOW = 12  # letters and digits: long enough that prose rarely repeats by chance, short enough for ids
MAX_PRIVATE = 8192  # fingerprints per run: about 8 KB of private text (each is 6 bytes of hash)
MAX_PUBLIC = 8192
MAX_SCAN = 65_536  # characters of one result read: more than the bounds above could ever hold
_DECODE_ROUNDS = 3  # a value percent-encoded twice or three times still folds to its plain form


def fold(text: str) -> str:
    """The letters and digits of `text` after undoing the encodings a URL or a page may add."""
    for _ in range(_DECODE_ROUNDS):
        decoded = html.unescape(unquote_plus(text))
        if decoded == text:
            break
        text = decoded
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum())


def fingerprints(text: str) -> list[int]:
    """One hash per `WINDOW`-character window of the folded text, in order (repeats kept)."""
    folded = fold(text)
    return [_hash(folded[i : i + WINDOW]) for i in range(len(folded) - WINDOW + 1)]


def _hash(window: str) -> int:
    # Stable across processes (unlike `hash`), so state written before a restart still matches.
    return int.from_bytes(hashlib.blake2b(window.encode(), digest_size=6).digest(), "big")


def empty() -> dict[str, Any]:
    return {"private": {}, "public": [], "overflow": False}


def learn(state: dict[str, Any] | None, text: str, private_source: str | None, *, whole: bool = True) -> dict[str, Any]:
    """`state` after the run read `text`: private when `private_source` (the tool that returned it)
    is set, public otherwise. Idempotent, so a re-delivered event changes nothing.

    `whole=False`: `text` is the preview of a result offloaded to the blob store, which the model
    reads in full. The executor never offloads a private tool's result, so a private one arriving
    offloaded means the two saw different policies (a change between the call and its result): the
    gate cannot fingerprint what it never sees, nor let a later `read_result` of that blob (public
    like any other tool's output) declassify the preview, so the run fails closed (`overflow`)."""
    state = state if state is not None else empty()
    if private_source is not None and not whole:
        state["overflow"] = True
    new = set(fingerprints(text[:MAX_SCAN]))
    if private_source is None:
        known = set(state["public"])
        room = max(0, MAX_PUBLIC - len(known))
        state["public"] = [*state["public"], *sorted(new - known)[:room]]
        return state
    private: dict[str, list[int]] = state["private"]
    held = {h for hashes in private.values() for h in hashes}
    fresh = sorted(new - held)
    room = max(0, MAX_PRIVATE - len(held))
    if len(fresh) > room or len(text) > MAX_SCAN:
        state["overflow"] = True  # more than the gate remembers: it cannot tell what is safe any more
    if fresh[:room]:
        private[private_source] = [*private.get(private_source, []), *fresh[:room]]
    return state


@dataclass(frozen=True, slots=True)
class Leak:
    """Why a call's arguments carry private data: which argument, how much, read from which tools."""

    argument: str
    chars: int  # the longest run of private characters found in that argument
    sources: tuple[str, ...]
    overflow: bool = False

    def reason(self, tool: str) -> str:
        if self.overflow and not self.sources:
            return (f"this run read more private data than the gate fingerprints ({MAX_PRIVATE} windows): "
                    f"every call of an egress-capable tool such as {tool} needs a person")  # fmt: skip
        return (f"argument {self.argument!r} of {tool} carries {self.chars} characters of data this run read "
                f"from {', '.join(self.sources)} (private: marked so by this tenant, or its memory), and {tool} "
                f"can send it out")  # fmt: skip


def find_leak(state: dict[str, Any] | None, arguments_json: str) -> Leak | None:
    """The strongest leak in a call's arguments (keys and values at any depth), or None."""
    if state is None:
        return None
    owner: dict[int, str] = {}
    for source, hashes in state["private"].items():
        for h in hashes:
            owner.setdefault(h, source)
    public = set(state["public"])
    try:
        arguments = orjson.loads(arguments_json)
    except orjson.JSONDecodeError:
        arguments = arguments_json  # not JSON (the gate denies it anyway): scanned as one string
    best: Leak | None = None
    for path, text in _leaves(arguments, ""):
        run = longest = 0
        sources: set[str] = set()
        for h in fingerprints(text):
            source = owner.get(h) if h not in public else None
            run = run + 1 if source is not None else 0
            longest = max(longest, run)
            if source is not None:
                sources.add(source)
        if longest and (best is None or longest + WINDOW - 1 > best.chars):
            best = Leak(path or "(arguments)", longest + WINDOW - 1, tuple(sorted(sources)), state["overflow"])
    if best is None and state["overflow"]:
        return Leak("", 0, (), overflow=True)
    return best


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, text) for every string, number and object key: each is checked on its own, so a
    window never spans two arguments (which would match text that no argument holds)."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            yield where, str(key)
            yield from _leaves(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, str(value)
