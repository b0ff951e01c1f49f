"""The files the platform reads at run time: the Avro schemas, topics.yaml and the broker's build
files (infra/kafka). They live in the repository's top-level folders (the design card's layout)
and ship inside the package through the links in this folder, so an installed wheel finds them
where a checkout does: through `importlib.resources`, never a path relative to the source tree."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


class ResourceError(RuntimeError):
    """A shipped file is missing, or the package is not installed as plain files."""


def resource_path(*parts: str) -> Path:
    """The shipped file or folder at `parts` (e.g. "schemas", or "infra", "kafka", "pom.xml").

    A path on disk, not a zip member: Maven and the broker's JVM are handed these paths."""
    found = files(__name__).joinpath(*parts)
    if not isinstance(found, Path):
        raise ResourceError(f"agentstream's {'/'.join(parts)} is not a file on disk: install the package unzipped")
    if not found.exists():
        raise ResourceError(f"agentstream's {'/'.join(parts)} is missing from {found.parent}: reinstall the package")
    return found
