"""The settings model: what each variable becomes, the defaults with none set, and the error a
value that does not fit its type gets (it names the variable)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentstream.cli.main import main
from agentstream.config import LOCAL_BOOTSTRAP, ModelSettings, Settings
from agentstream.kafka.auth import CREDENTIALS_DIR_ENV, SASL_FILE_ENV
from agentstream.netguard import ALLOW_PRIVATE_ENV, AddressRules
from agentstream.processors.kv_dispatcher.prober import Target, parse_targets
from agentstream.processors.model_invoker.routes import ROUTES_ENV
from agentstream.settings import (
    CostSettings,
    KafkaSettings,
    KvSettings,
    ProcessSettings,
    SettingsError,
    TracingSettings,
    env_name,
    forget_loaded,
    load,
    once,
)
from agentstream.settings.table import rows
from agentstream.stack import LAYOUT_ENV


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """An environment with none of the platform's variables set, and a home under tmp_path."""
    for variable, *_ in rows():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    forget_loaded()
    yield monkeypatch
    forget_loaded()


def test_with_nothing_set_the_defaults_are_the_documented_ones(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Settings.from_env()
    assert (s.bootstrap_servers, s.topic_prefix, s.uses_local_broker) == (LOCAL_BOOTSTRAP, "agentstream", True)
    assert s.home == (tmp_path / "data" / "agentstream").resolve()
    assert s.kafka_credentials_dir == s.home / "keys" / "kafka"
    assert s.model == ModelSettings(provider="openai", base_url="", timeout_s=60.0, max_attempts=4, retry_base_s=1.0)
    assert (s.model.stream, s.model.max_concurrency, s.model.api_key, s.model.routes) == (False, 32, None, None)
    assert (s.gateway.recent_runs, s.gateway.checkpoint_s) == (1000, 5.0)
    assert (s.cost.governor, s.cost.bytes_per_token, s.cost.prices) == (True, 1.0, None)
    assert (s.kv.replicas, s.kv.policy, s.kv.max_queue_wait_s) == ({}, "agentstream", None)
    assert s.instance == "0"


def test_each_variable_becomes_its_typed_value(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    env.setenv("AGENTSTREAM_KAFKA_EXTRA", "security.protocol=SASL_SSL; ssl.ca.location = /ca.pem")
    env.setenv("AGENTSTREAM_HOME", str(tmp_path / "h"))
    env.setenv("AGENTSTREAM_MODEL_STREAM", "yes")
    env.setenv("AGENTSTREAM_MODEL_TIMEOUT_S", "2.5")
    env.setenv("AGENTSTREAM_MODEL_ROUTES", str(tmp_path / "routes.yaml"))
    env.setenv("AGENTSTREAM_COST_GOVERNOR", "0")
    env.setenv("AGENTSTREAM_GATEWAY_RECENT_RUNS", "2")
    env.setenv("AGENTSTREAM_REPLICAS", "r0=http://a:1/, r1=http://b:2")
    env.setenv("AGENTSTREAM_KV_MAX_QUEUE_WAIT_S", "10")
    env.setenv("AGENTSTREAM_TOPIC_PREFIX", "")  # blank counts as unset
    s = Settings.from_env()
    assert (s.bootstrap_servers, s.uses_local_broker, s.kafka_credentials_dir) == (
        "kafka-1:9092,kafka-2:9092", False, None,
    )  # fmt: skip
    assert s.kafka_extra == {"security.protocol": "SASL_SSL", "ssl.ca.location": "/ca.pem"}
    assert (s.home, s.topic_prefix) == ((tmp_path / "h").resolve(), "agentstream")
    assert (s.model.stream, s.model.timeout_s, s.model.routes) == (True, 2.5, tmp_path / "routes.yaml")
    assert (s.cost.governor, s.gateway.recent_runs, s.kv.max_queue_wait_s) == (False, 2, 10.0)
    assert s.kv.replicas == {"r0": "http://a:1", "r1": "http://b:2"}
    assert parse_targets("r0=http://a:1/") == [Target("r0", "http://a:1")]


def test_a_value_that_does_not_fit_names_its_variable(env: pytest.MonkeyPatch) -> None:
    env.setenv("AGENTSTREAM_MODEL_TIMEOUT_S", "soon")
    env.setenv("AGENTSTREAM_MODEL_MAX_ATTEMPTS", "0")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert caught.value.component == "model invoker"
    message = str(caught.value)
    assert "AGENTSTREAM_MODEL_TIMEOUT_S" in message and "'soon'" in message
    assert "AGENTSTREAM_MODEL_MAX_ATTEMPTS" in message and "greater than 0" in message
    for variable, value in [
        ("AGENTSTREAM_KV_POLICY", "fastest"),
        ("AGENTSTREAM_REPLICAS", "http://a:1"),
        ("AGENTSTREAM_KAFKA_EXTRA", "no-equals-sign"),
        ("AGENTSTREAM_COST_GOVERNOR", "maybe"),
        ("AGENTSTREAM_TOPIC_PREFIX", "has space"),
    ]:
        env.delenv("AGENTSTREAM_MODEL_TIMEOUT_S", raising=False)
        env.delenv("AGENTSTREAM_MODEL_MAX_ATTEMPTS", raising=False)
        with env.context() as one:
            one.setenv(variable, value)
            with pytest.raises(SettingsError, match=variable):
                Settings.from_env()


def test_the_egress_exemptions_are_networks(env: pytest.MonkeyPatch) -> None:
    env.setenv(ALLOW_PRIVATE_ENV, "127.0.0.1/32, 10.0.0.0/8")
    rules = AddressRules.from_env()
    assert rules.exempt(ip_address("10.1.2.3")) and not rules.exempt(ip_address("192.168.0.1"))
    env.setenv(ALLOW_PRIVATE_ENV, "127.0.0.1/8")  # host bits set: a typo, not a network
    with pytest.raises(SettingsError, match=ALLOW_PRIVATE_ENV):
        AddressRules.from_env()


def test_settings_are_immutable_and_keep_secrets_out_of_their_repr(env: pytest.MonkeyPatch) -> None:
    env.setenv("AGENTSTREAM_MODEL_API_KEY", "sk-very-secret")
    env.setenv("AGENTSTREAM_KAFKA_EXTRA", "sasl.password=hunter2")
    s = Settings.from_env()
    assert s.model.api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(s) and "hunter2" not in repr(s)
    with pytest.raises(ValidationError):
        s.model.timeout_s = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.topic_prefix = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("http://", "names no host"),
        ("http://:4318", "names no host"),
        ("grpc://collector:4317", "http:// or https://"),
        ("http://collector:99999", "port"),
        ("http://collector:port", "port"),
        ("http://collector:4318/?token=x", "query"),
        ("http://user:pw-hunter2@:4318", "names no host"),
    ],
)
def test_a_collector_endpoint_names_a_host_and_its_error_keeps_credentials_out(
    env: pytest.MonkeyPatch, endpoint: str, problem: str
) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT") as caught:
        load(TracingSettings)
    assert problem in str(caught.value)
    assert endpoint not in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_collector_endpoint_may_carry_credentials_a_path_and_an_ipv6_host(env: pytest.MonkeyPatch) -> None:
    for endpoint in ("http://collector:4318", "https://user:token@otel.example/prefix", "http://[::1]:4318"):
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        settings = load(TracingSettings)
        assert settings.endpoint == endpoint and "token" not in repr(settings)


def test_a_process_wide_setting_is_read_once(env: pytest.MonkeyPatch) -> None:
    env.setenv("AGENTSTREAM_LOG_LEVEL", "debug")
    assert once(ProcessSettings).log_level == "DEBUG"
    env.setenv("AGENTSTREAM_LOG_LEVEL", "ERROR")
    assert once(ProcessSettings).log_level == "DEBUG"  # kept for the process's life
    assert load(ProcessSettings).log_level == "ERROR"


def test_the_variable_names_the_code_writes_are_the_ones_it_reads() -> None:
    # Spawners write these into a child's environment; the child's settings must read the same names.
    assert env_name(KafkaSettings, "sasl_file") == SASL_FILE_ENV
    assert env_name(KafkaSettings, "credentials_dir") == CREDENTIALS_DIR_ENV
    assert env_name(ModelSettings, "routes") == ROUTES_ENV
    assert env_name(ProcessSettings, "layout") == LAYOUT_ENV
    assert env_name(CostSettings, "governor") == "AGENTSTREAM_COST_GOVERNOR"
    assert env_name(KvSettings, "replicas") == "AGENTSTREAM_REPLICAS"


def test_the_cli_says_which_variable_is_wrong_and_exits_2(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("AGENTSTREAM_GATEWAY_CHECKPOINT_S", "-1")
    with pytest.raises(SystemExit) as exited:
        main(["status"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "AGENTSTREAM_GATEWAY_CHECKPOINT_S" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exited:
        main(["config"])
    assert exited.value.code == 2 and "AGENTSTREAM_GATEWAY_CHECKPOINT_S" in capsys.readouterr().err
    env.delenv("AGENTSTREAM_GATEWAY_CHECKPOINT_S")
    env.setenv("AGENTSTREAM_MODEL_API_KEY", "sk-very-secret")
    with pytest.raises(SystemExit) as exited:
        main(["config"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "sk-very-secret" not in out
    assert any(line.split() == ["AGENTSTREAM_MODEL_API_KEY", "(hidden)"] for line in out.splitlines())
