"""The Connect worker's jars and the Iceberg sink's plugin folder, fetched once from Maven Central
by the project's own build files (infra/connect/pom.xml, infra/connect/iceberg/pom.xml) into the
jar cache, beside the broker's."""

from __future__ import annotations

import shutil
from pathlib import Path

from agentstream.jvm import fetch_jars, run_mvn
from agentstream.resources import resource_path
from agentstream.settings import LocalBrokerSettings, once

WORKER_POM = resource_path("infra", "connect", "pom.xml")
PLUGIN_POM = resource_path("infra", "connect", "iceberg", "pom.xml")
AWS_POM = resource_path("infra", "connect", "iceberg-aws", "pom.xml")
LOG4J = resource_path("infra", "connect", "log4j.properties")
# The plugin's folder name under plugin.path: Connect gives each folder its own class loader.
PLUGIN_NAME = "iceberg-sink"


def pinned(pom: Path, prop: str) -> str:
    text = pom.read_text()
    start = text.index(f"<{prop}>") + len(prop) + 2
    return text[start : text.index(f"</{prop}>")]


def worker_dir() -> Path:
    return once(LocalBrokerSettings).jar_cache() / f"connect-{pinned(WORKER_POM, 'kafka.version')}"


def plugin_path() -> Path:
    """The worker's plugin.path: one folder holding the Iceberg sink's folder."""
    return once(LocalBrokerSettings).jar_cache() / f"connect-plugins-iceberg-{pinned(PLUGIN_POM, 'iceberg.version')}"


async def build_converter(source: Path, plugin_root: Path) -> Path:
    """The journal's converter (connectors/, Java) built and tested by Maven, its runtime jars in
    `<plugin_root>/agentstream-converter`: a plugin.path folder for the worker."""
    target = plugin_root / "agentstream-converter"
    await run_mvn(source / "pom.xml", "package", "dependency:copy-dependencies", "-DincludeScope=runtime",
                  f"-DoutputDirectory={target}", what="the journal's converter")  # fmt: skip
    jar = next((source / "target").glob("agentstream-connectors-*.jar"))
    shutil.copyfile(jar, target / jar.name)
    return plugin_root


async def ensure_worker_jars() -> Path:
    return await fetch_jars(WORKER_POM, worker_dir(), "the Kafka Connect worker")


async def ensure_plugin(*, aws: bool = False) -> Path:
    """The plugin.path folder, its Iceberg sink folder fetched if missing; with `aws`, also
    Iceberg's S3FileIO and the AWS SDK bundle (~70 MB, fetched only for S3 storage), in the sink's
    folder: Connect gives each plugin folder its own class loader, so they must sit beside it."""
    root = plugin_path()
    sink = await fetch_jars(PLUGIN_POM, root / PLUGIN_NAME, "the Iceberg Kafka Connect sink")
    if aws and not (sink / ".aws").exists():
        jars = await fetch_jars(AWS_POM, plugin_path().with_name(f"{plugin_path().name}-aws"), "Iceberg's S3 support")
        for jar in jars.glob("*.jar"):
            if not (sink / jar.name).exists():  # iceberg-aws's own dependencies are the sink's already
                shutil.copyfile(jar, sink / jar.name)  # the AWS bundle is ~70 MB: streamed, not read whole
        (sink / ".aws").write_text("ok\n")
    return root
