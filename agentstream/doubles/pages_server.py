"""The pages tool of the context bench: a stdio MCP server whose `fetch_page {"page": "pN"}` answers
a deterministic page of 20-200 KB (bench/context.py, the context-faithful scripted model).

    python -m agentstream.doubles.pages_server [--seed N]

Page `pN`'s size comes from a hash of its id. Its first line, `PAGE pN: holds the fact <key>`, sits
in the 1 KiB preview an offloaded result keeps, so a cleared result still says which fact it held;
the line `FACT <key> = <value>` sits after the first 4 KiB (never in a preview) and before 60,000
characters (so a result cut at the journal's 64,000 still holds it). Keys and values derive from the
page id and the seed, so the bench knows every expected answer (`expected_facts`) without asking.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from collections.abc import Iterable, Sequence

MIN_PAGE_CHARS = 20_000
MAX_PAGE_CHARS = 200_000
FACT_AFTER = 4096  # past the offload preview (1 KiB) with room to spare
FACT_BEFORE = 60_000  # inside the 64,000 characters a journaled result is cut to
PAGE_ID = re.compile(r"^p[0-9]{1,9}$")
_WORDS = (
    "stream", "record", "offset", "broker", "replica", "segment", "consumer", "producer", "partition",
    "leader", "follower", "commit", "journal", "snapshot", "compaction", "retention", "schema", "tenant",
)  # fmt: skip


class PageNotFound(ValueError):
    """A page id that is not `p` and a number."""


def _digest(seed: int, page: str, what: str) -> bytes:
    return hashlib.sha256(f"{seed}:{page}:{what}".encode()).digest()


def _check(page: str) -> str:
    if not isinstance(page, str) or not PAGE_ID.match(page):
        raise PageNotFound(f"no page {page!r}: page ids are `p` and a number (p1, p2, ...)")
    return page


def fact(page: str, seed: int = 0) -> tuple[str, str]:
    """(key, value) of the one fact page `page` holds."""
    _check(page)
    return f"fact_{_digest(seed, page, 'key').hex()[:10]}", _digest(seed, page, "value").hex()[:16]


def expected_facts(pages: Iterable[str], seed: int = 0) -> dict[str, str]:
    return dict(fact(p, seed) for p in pages)


def page_size(page: str) -> int:
    """The page's length in characters (ASCII, so bytes too): from a hash of its id alone."""
    h = int.from_bytes(hashlib.sha256(f"size:{_check(page)}".encode()).digest()[:8], "big")
    return MIN_PAGE_CHARS + h % (MAX_PAGE_CHARS - MIN_PAGE_CHARS + 1)


def _filler(page: str, seed: int, chars: int) -> str:
    """`chars` characters of numbered filler lines, none starting with FACT or PAGE."""
    lines: list[str] = []
    total, n = 0, 0
    stream = _digest(seed, page, "filler")
    while total <= chars:  # the joined text is `total - 1` long
        if n % 32 == 0 and n:
            stream = hashlib.sha256(stream).digest()
        words = " ".join(_WORDS[(b + n) % len(_WORDS)] for b in stream[(n % 32) : (n % 32) + 9])
        line = f"{page} line {n:05d}: {words}."
        lines.append(line)
        total += len(line) + 1
        n += 1
    return "\n".join(lines)[:chars]


def render_page(page: str, seed: int = 0) -> str:
    size = page_size(page)
    key, value = fact(page, seed)
    head = f"PAGE {page}: holds the fact {key}\n"
    fact_line = f"\nFACT {key} = {value}\n"
    h = int.from_bytes(_digest(seed, page, "where")[:8], "big")
    # The fact's line starts somewhere in [FACT_AFTER, FACT_BEFORE - its length] and the page ends at `size`.
    where = FACT_AFTER + h % (min(size, FACT_BEFORE) - FACT_AFTER - len(fact_line))
    before = _filler(page, seed, where - len(head))
    after = _filler(page, seed + 1, size - where - len(fact_line))
    return head + before + fact_line + after


def main(argv: Sequence[str] | None = None) -> None:
    from mcp.server.mcpserver import MCPServer

    parser = argparse.ArgumentParser(prog="python -m agentstream.doubles.pages_server", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="varies every page's fact key and value")
    args = parser.parse_args(argv)
    server = MCPServer("pages")

    # structured_output=False: the page travels once, as text (not again as structured content).
    @server.tool(description="Fetches the page `page` (an id such as p1): 20-200 KB of text.", structured_output=False)
    def fetch_page(page: str) -> str:
        return render_page(page, args.seed)

    server.run()


if __name__ == "__main__":
    main()
