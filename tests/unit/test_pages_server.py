"""The context bench's pages tool: deterministic pages whose one fact sits where a cut journal result
keeps it and an offload preview does not, served by a real MCP stdio process."""

from __future__ import annotations

import sys

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent

from agentstream.blobs.offload import PREVIEW_CHARS
from agentstream.doubles.pages_server import (
    FACT_AFTER,
    FACT_BEFORE,
    MAX_PAGE_CHARS,
    MIN_PAGE_CHARS,
    PageNotFound,
    expected_facts,
    fact,
    page_size,
    render_page,
)
from agentstream.journal_limits import TOOL_RESULT_LIMIT_CHARS


def test_pages_are_deterministic_sized_and_hold_their_fact_where_a_cut_result_keeps_it() -> None:
    sizes = set()
    for n in range(1, 41):
        page = f"p{n}"
        text = render_page(page, seed=7)
        key, value = fact(page, seed=7)
        assert text == render_page(page, seed=7) and len(text) == page_size(page)
        assert MIN_PAGE_CHARS <= len(text) <= MAX_PAGE_CHARS and text.isascii()
        assert text.splitlines()[0] == f"PAGE {page}: holds the fact {key}"
        line = f"\nFACT {key} = {value}\n"
        where = text.index(line)
        assert where >= FACT_AFTER and where + len(line) <= FACT_BEFORE < TOOL_RESULT_LIMIT_CHARS
        assert key in text[:PREVIEW_CHARS] and value not in text[:PREVIEW_CHARS]  # the preview names it only
        assert text.count("FACT ") == 1 and text.count("\nPAGE ") == 0
        sizes.add(len(text))
    assert len(sizes) == 40 and max(sizes) - min(sizes) > 100_000  # spread over the range


def test_the_seed_changes_the_facts_and_expected_facts_names_them() -> None:
    pages = ["p1", "p2", "p3"]
    facts = expected_facts(pages, seed=1)
    assert list(facts) == [fact(p, 1)[0] for p in pages] and len(set(facts.values())) == 3
    assert expected_facts(pages, seed=2) != facts and expected_facts(pages, seed=1) == facts
    for bad in ["", "p", "page1", "p1/../x", "p-1"]:
        with pytest.raises(PageNotFound, match="page ids are `p` and a number"):
            render_page(bad)


async def test_fetch_page_over_mcp_stdio() -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "agentstream.doubles.pages_server", "--seed", "5"]
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        assert [t.name for t in tools] == ["fetch_page"]
        result = await session.call_tool("fetch_page", {"page": "p3"})
        assert not result.is_error and len(result.content) == 1
        block = result.content[0]
        assert isinstance(block, TextContent) and block.text == render_page("p3", seed=5)
        refused = await session.call_tool("fetch_page", {"page": "../etc"})
        assert refused.is_error
