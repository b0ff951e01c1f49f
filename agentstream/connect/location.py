"""Where the warehouse's tables live and how each of their clients reaches the catalog: the sinks
(Java, `iceberg.catalog.*`), the Connect worker (a secrets file its config provider reads) and the
readers (pyiceberg). The same warehouse, described once for the three.

Embedded default: the SQLite JDBC catalog and the files in the warehouse directory. Storage `s3`:
the files in a bucket of the blob store's S3 (any S3, or the local SeaweedFS), the catalog still the
embedded one. A REST catalog URL: that catalog for the sinks and the readers alike. S3 credentials
never enter a connector's configuration (readable through the worker's REST API): the connector
names them as `${file:...}` references the worker resolves from a 0600 file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agentstream.config import Settings
from agentstream.settings import BlobSettings, WarehouseSettings, load

if TYPE_CHECKING:
    from agentstream.blobs.s3 import S3Target

S3_FILE_IO = "org.apache.iceberg.aws.s3.S3FileIO"
SECRETS_FILE = "warehouse-secrets.properties"


@dataclass(frozen=True)
class WarehouseLocation:
    root: Path  # the warehouse directory: the embedded catalog (and the files, when local)
    files_uri: str  # file:///... or s3://bucket/warehouse
    rest_catalog: str | None = None
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_path_style: bool = True
    s3_key_id: str | None = field(default=None, repr=False)
    s3_secret: str | None = field(default=None, repr=False)
    # The blob store's S3 target the files go to (None: not S3), for the one place that creates the bucket.
    s3_target: S3Target | None = field(default=None, repr=False, compare=False)

    @property
    def s3(self) -> bool:
        return self.files_uri.startswith("s3://")

    @property
    def embedded(self) -> bool:
        return self.rest_catalog is None

    def connector_catalog(self, secrets_file: Path | None) -> dict[str, str]:
        """The sinks' catalog properties (each `iceberg.catalog.<key>`); {} for the embedded default,
        which the sink spells out itself. Credentials as references into `secrets_file`."""
        props: dict[str, str] = {}
        if self.rest_catalog is not None:
            props.update({"type": "rest", "uri": self.rest_catalog})
        if self.s3:
            props.update({"warehouse": self.files_uri, "io-impl": S3_FILE_IO, "client.region": self.s3_region,
                          "s3.path-style-access": str(self.s3_path_style).lower()})  # fmt: skip
            if self.s3_endpoint is not None:
                props["s3.endpoint"] = self.s3_endpoint
            if self.s3_key_id is not None and secrets_file is not None:
                props["s3.access-key-id"] = f"${{file:{secrets_file}:s3.access-key-id}}"
                props["s3.secret-access-key"] = f"${{file:{secrets_file}:s3.secret-access-key}}"
        return props

    def worker_secrets(self) -> str | None:
        """The secrets file's content (Java properties) when the sinks need credentials."""
        if not self.s3 or self.s3_key_id is None or self.s3_secret is None:
            return None
        return f"s3.access-key-id={self.s3_key_id}\ns3.secret-access-key={self.s3_secret}\n"

    def reader_catalog(self) -> dict[str, str] | None:
        """pyiceberg's catalog properties; None: the embedded catalog in `root` (the reader's default)."""
        if self.embedded and not self.s3:
            return None
        props: dict[str, str] = (
            {"type": "rest", "uri": str(self.rest_catalog)} if self.rest_catalog is not None
            else {"type": "sql", "uri": f"sqlite:///{self.root / 'catalog.db'}", "warehouse": self.files_uri}
        )  # fmt: skip
        if self.s3:
            props.update(
                {"s3.region": self.s3_region, "s3.force-virtual-addressing": str(not self.s3_path_style).lower()}
            )
            if self.s3_endpoint is not None:
                props["s3.endpoint"] = self.s3_endpoint
            if self.s3_key_id is not None and self.s3_secret is not None:
                props.update({"s3.access-key-id": self.s3_key_id, "s3.secret-access-key": self.s3_secret})
        return props


def warehouse_location(
    settings: Settings, warehouse: WarehouseSettings | None = None, blobs: BlobSettings | None = None
) -> WarehouseLocation:
    """The deployment's warehouse, as its settings describe it."""
    wh = warehouse or load(WarehouseSettings)
    root = wh.resolved_warehouse(settings.home)
    if wh.storage == "local":
        return WarehouseLocation(root, root.as_uri(), wh.rest_catalog)
    from agentstream.blobs.factory import s3_target  # boto3 on demand: only the S3 storage needs it

    target = s3_target(settings, (blobs or load(BlobSettings)).model_copy(update={"s3_bucket": wh.s3_bucket}))
    return WarehouseLocation(
        root, f"s3://{target.bucket}/warehouse", wh.rest_catalog, target.endpoint_url, target.region,
        target.addressing_style != "virtual", target.access_key_id, target.secret_access_key, target,
    )  # fmt: skip


def ensure_bucket(location: WarehouseLocation) -> None:
    """The bucket of the tables' files, created when missing and allowed: once, where the sinks are
    registered (the sinks do not create it; readers only read). Blocking: call it in a thread."""
    target = location.s3_target
    if target is None:
        return
    from agentstream.blobs.s3 import ensure_bucket as ensure
    from agentstream.blobs.s3 import s3_client

    ensure(s3_client(target), target, f"s3://{target.bucket} at {target.endpoint_url or 'the AWS default endpoint'}")


def reader_catalog(settings: Settings, warehouse: WarehouseSettings | None = None) -> dict[str, str] | None:
    """pyiceberg's catalog properties for this deployment's readers; None for the embedded default."""
    return warehouse_location(settings, warehouse).reader_catalog()
