"""The README and docs/ stay short, linked and true to the tree: a link to a moved file, a test path
that no longer exists or a README test command that CI no longer runs is caught here, not by a
reader."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 220

# [text](target) outside code spans; images and reference-style links are not used in these files.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_TEST_PATH = re.compile(r"tests/[A-Za-z0-9_/*.-]+\.py")
# A file or folder of the product named in backticks, e.g. `agentstream/kafka/runtime.py`, `processors/policy_gate/`.
_SOURCE_PATH = re.compile(r"`((?:agentstream|processors)/[A-Za-z0-9_/.-]*)`")
_CODE_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    # GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _CODE_FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _relative_links(page: Path) -> list[str]:
    text = _CODE_FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in _LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; keep it under {README_MAX_LINES}, move detail to docs/"
    )


def test_every_relative_link_points_to_an_existing_file_and_heading() -> None:
    broken: list[str] = []
    for page in _pages():
        for target in _relative_links(page):
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _mentions_missing(pattern: re.Pattern[str]) -> list[str]:
    # A mention may be a glob (`tests/*/test_attack_*.py`): it must match at least one path.
    missing: list[str] = []
    for page in [*_pages(), ROOT / "bench" / "RESULTS.md"]:
        for mention in sorted(set(pattern.findall(page.read_text(encoding="utf-8")))):
            if not list(ROOT.glob(mention.rstrip("/"))):
                missing.append(f"{page.relative_to(ROOT)}: {mention}")
    return missing


def test_every_test_path_mentioned_exists() -> None:
    missing = _mentions_missing(_TEST_PATH)
    assert not missing, "test paths that do not exist:\n" + "\n".join(missing)


def test_every_source_path_mentioned_exists() -> None:
    missing = _mentions_missing(_SOURCE_PATH)
    assert not missing, "source paths that do not exist:\n" + "\n".join(missing)


def test_the_checkers_patterns_find_what_they_check(tmp_path: Path) -> None:
    # The checks above pass vacuously if a pattern stops matching: each is tried on a known sample.
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n[ok](page.md#top) [gone](missing.md) [web](https://example.com)\n```\n[x](in-code.md)\n```\n"
    )
    assert _relative_links(page) == ["page.md#top", "missing.md"]
    assert _anchors(page) == {"top"}
    assert _slug("The run API: `bench/gateway.py`") == "the-run-api-benchgatewaypy"
    assert _SOURCE_PATH.findall("`agentstream/kafka/runtime.py`, `tools/list`, `processors/`") == [
        "agentstream/kafka/runtime.py",
        "processors/",
    ]
