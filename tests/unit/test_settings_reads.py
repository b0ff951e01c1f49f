"""No environment read outside the settings package: every variable the platform reads is a typed,
documented field of agentstream/settings/. Writing the environment, and handing a copy to a child
process through agentstream.settings.environ, stay allowed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The product tree (agentstream/processors and agentstream/tools are links to these).
PRODUCT = (ROOT / "agentstream", ROOT / "processors", ROOT / "tools")
SETTINGS = ROOT / "agentstream" / "settings"
# Each exception with its reason.
ALLOWED = {
    # It runs inside the sandbox on the standard library alone (`python -I -S`): the environment it
    # reads and passes on is the sandboxed tool's, not the platform's configuration.
    "agentstream/sandbox/bootstrap.py",
}
_NAMES = {"environ", "environb", "getenv", "getenvb"}


def _sources() -> list[Path]:
    files: list[Path] = []
    for top in PRODUCT:
        for path in sorted(top.rglob("*.py")):
            # A link's files are found under their real path; the settings package may read.
            if any(p.is_symlink() for p in path.relative_to(ROOT).parents if p != Path(".")):
                continue
            if SETTINGS in path.parents or path.relative_to(ROOT).as_posix() in ALLOWED:
                continue
            files.append(path)
    return files


def _is_write(node: ast.Attribute, parents: dict[ast.AST, ast.AST]) -> bool:
    """`os.environ[K] = V`, `del os.environ[K]` and `os.environ.pop(K)`: changes, not reads."""
    parent = parents.get(node)
    if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store | ast.Del):
        return True
    return isinstance(parent, ast.Attribute) and parent.attr == "pop" and isinstance(parents.get(parent), ast.Call)


def environment_reads(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{node.lineno}: from os import {a.name}" for a in node.names if a.name in _NAMES]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in _NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and not _is_write(node, parents)
        ):
            found.append(f"{node.lineno}: os.{node.attr}")
    return [f"{path.relative_to(root)}:{line}" for line in found]


def test_nothing_outside_the_settings_package_reads_the_environment() -> None:
    sources = _sources()
    assert len(sources) > 100, "the product tree was not found"
    reads = [read for path in sources for read in environment_reads(path)]
    assert not reads, (
        "environment reads outside agentstream/settings/ (add a field to a settings class and pass "
        "the settings in, or use agentstream.settings.environ for a child's environment):\n" + "\n".join(reads)
    )


def test_the_check_sees_a_read_and_lets_a_write_pass(tmp_path: Path) -> None:
    cases = {
        "import os\nx = os.environ.get('A')\n": 1,
        "import os\nx = os.getenv('A')\n": 1,
        "from os import environ\n": 1,
        "import os\nenv = dict(os.environ)\n": 1,
        "import os\nos.environ['A'] = '1'\ndel os.environ['A']\nos.environ.pop('B', None)\n": 0,
        "# os.environ in a comment\nx = 'os.environ in a string'\n": 0,
    }
    path = tmp_path / "probe.py"
    for source, expected in cases.items():
        path.write_text(source)
        assert len(environment_reads(path, tmp_path)) == expected, source
