"""The settings model: every environment variable the platform reads, one class per component
(`platform.py`, `processors.py`), composed by `agentstream.config.Settings`. Nothing outside this
package reads the environment (tests/unit/test_settings_reads.py holds the line)."""

from agentstream.settings.base import ComponentSettings, SettingsError, env_name, forget_loaded, load, once
from agentstream.settings.blobs import BlobSettings
from agentstream.settings.memory import MemorySettings
from agentstream.settings.metrics import MetricsSettings
from agentstream.settings.orchestrator import OrchestratorSettings
from agentstream.settings.platform import (
    DEFAULT_JVM_OPTS,
    LOCAL_BOOTSTRAP,
    CliSettings,
    EgressSettings,
    HomeSettings,
    KafkaSettings,
    LocalBrokerSettings,
    ProcessSettings,
    ResourceSettings,
)
from agentstream.settings.processors import CostSettings, GatewaySettings, KvSettings, ModelSettings, TlsSettings
from agentstream.settings.tracing import TracingSettings
from agentstream.settings.warehouse import WarehouseSettings

# Every settings class, in the order a reader meets them in the configuration table: where Kafka
# is, where the platform keeps its files, how each process runs, each processor's knobs, the CLI's.
COMPONENTS: tuple[type[ComponentSettings], ...] = (
    KafkaSettings,
    HomeSettings,
    ProcessSettings,
    ResourceSettings,
    LocalBrokerSettings,
    EgressSettings,
    ModelSettings,
    TlsSettings,
    OrchestratorSettings,
    GatewaySettings,
    CostSettings,
    KvSettings,
    WarehouseSettings,
    BlobSettings,
    MemorySettings,
    MetricsSettings,
    TracingSettings,
    CliSettings,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_JVM_OPTS",
    "LOCAL_BOOTSTRAP",
    "BlobSettings",
    "CliSettings",
    "ComponentSettings",
    "CostSettings",
    "EgressSettings",
    "GatewaySettings",
    "HomeSettings",
    "KafkaSettings",
    "KvSettings",
    "LocalBrokerSettings",
    "MemorySettings",
    "MetricsSettings",
    "ModelSettings",
    "OrchestratorSettings",
    "ProcessSettings",
    "ResourceSettings",
    "SettingsError",
    "TlsSettings",
    "TracingSettings",
    "WarehouseSettings",
    "env_name",
    "forget_loaded",
    "load",
    "once",
]
