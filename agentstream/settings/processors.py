"""Settings of the processors that have knobs: the model invoker (and the providers it calls), the
gateway, the cost governor and the KV-affinity dispatcher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic_settings import NoDecode

from agentstream.settings.base import ComponentSettings, split_pairs, variable

DispatchPolicy = Literal["round_robin", "least_loaded", "session_hash", "agentstream", "oracle"]


class ModelSettings(ComponentSettings):
    COMPONENT = "model invoker"

    provider: Literal["openai", "anthropic"] = variable(
        "openai", "AGENTSTREAM_MODEL_PROVIDER",
        "`openai` (any Chat Completions server: OpenAI, vLLM, SGLang, llama.cpp, Ollama) or `anthropic`",
    )  # fmt: skip
    base_url: str = variable(
        "", "AGENTSTREAM_MODEL_BASE_URL", "the provider's endpoint",
        shown_default="the scripted model server that `dev` / `demo` start",
    )  # fmt: skip
    # repr=False keeps it out of logs and error messages.
    api_key: str | None = variable(
        None, "AGENTSTREAM_MODEL_API_KEY", "sent to the provider only; never logged or journaled", repr=False
    )
    stream: bool = variable(False, "AGENTSTREAM_MODEL_STREAM", "use the provider's streaming wire protocol")
    timeout_s: PositiveFloat = variable(60.0, "AGENTSTREAM_MODEL_TIMEOUT_S", "per-attempt timeout of a model call")
    max_attempts: PositiveInt = variable(
        4, "AGENTSTREAM_MODEL_MAX_ATTEMPTS",
        "attempts on one provider before the next is tried (or the call fails); each failed one is journaled",
    )  # fmt: skip
    retry_base_s: NonNegativeFloat = variable(
        1.0, "AGENTSTREAM_MODEL_RETRY_BASE_S",
        "the first retry waits 0.5-1x this, each later one twice as long (at most 30 s)",
    )  # fmt: skip
    max_concurrency: PositiveInt = variable(
        32, "AGENTSTREAM_MODEL_CONCURRENCY", "bulkhead: model calls in flight per invoker process"
    )
    max_prompt_bytes: PositiveInt = variable(
        8 * 1024 * 1024, "AGENTSTREAM_MODEL_MAX_PROMPT_BYTES",
        "the largest prompt sent to a provider, offloaded tool results put back (UTF-8 bytes); a larger one fails "
        "the call as `prompt_too_large` before any blob is read (context management keeps prompts far below it)",
    )  # fmt: skip
    routes: Path | None = variable(
        None, "AGENTSTREAM_MODEL_ROUTES",
        "a routes file (tiers to providers and models, with fallbacks); unset: the provider above serves every tier",
    )  # fmt: skip


class TlsSettings(ComponentSettings):
    COMPONENT = "model invoker"

    cert_file: Path | None = variable(
        None, "SSL_CERT_FILE", "CA bundle the model providers' TLS is verified with", shown_default="certifi's roots"
    )
    cert_dir: Path | None = variable(
        None, "SSL_CERT_DIR", "a directory of CA certificates, used when SSL_CERT_FILE is unset"
    )


class GatewaySettings(ComponentSettings):
    COMPONENT = "gateway"

    # About 1.5 KB an event held (its SSE message and decoded event): 20,000 is some 30 MB.
    recent_runs: PositiveInt = variable(
        1000, "AGENTSTREAM_GATEWAY_RECENT_RUNS", "settled runs kept in memory (least recently used leave first)"
    )
    recent_events: PositiveInt = variable(
        20_000, "AGENTSTREAM_GATEWAY_RECENT_EVENTS", "events those settled runs may hold together"
    )
    window_events: NonNegativeInt = variable(
        1000, "AGENTSTREAM_GATEWAY_WINDOW_EVENTS", "per partition, read back at start so recent runs are listed again"
    )
    checkpoint_s: PositiveFloat = variable(
        5.0, "AGENTSTREAM_GATEWAY_CHECKPOINT_S", "how often the gateway checkpoints its run index"
    )


class CostSettings(ComponentSettings):
    COMPONENT = "cost governor"

    governor: bool = variable(
        True, "AGENTSTREAM_COST_GOVERNOR",
        "false: model and tool calls do not wait for a reservation (a deployment without a governor: no hard caps)",
    )  # fmt: skip
    prices: Path | None = variable(
        None, "AGENTSTREAM_PRICES", "the versioned price table the cost governor reserves and settles with",
        shown_default="the packaged `agentstream/pricing/prices.json`",
    )  # fmt: skip
    bytes_per_token: PositiveFloat = variable(
        1.0, "AGENTSTREAM_BUDGET_BYTES_PER_TOKEN",
        "prompt bytes per token in the worst-case reservation (1.0 is a true bound; more reserves less but may "
        "overshoot)",
    )  # fmt: skip


def parse_replicas(spec: str) -> dict[str, str]:
    """`"r0=http://127.0.0.1:9001,r1=http://..."` (AGENTSTREAM_REPLICAS) into name -> URL."""
    pairs: dict[str, str] = split_pairs(",")(spec)
    for name, url in pairs.items():
        if not url:
            raise ValueError(f"replica {name!r} has no URL (NAME=URL)")
    return {name: url.rstrip("/") for name, url in pairs.items()}


def _replicas(value: object) -> object:
    if isinstance(value, dict):  # built in code: the same URLs as from the variable
        return {name: url.rstrip("/") if isinstance(url, str) else url for name, url in value.items()}
    return parse_replicas(value) if isinstance(value, str) else value


class KvSettings(ComponentSettings):
    COMPONENT = "kv dispatcher"

    replicas: Annotated[dict[str, str], NoDecode, BeforeValidator(_replicas)] = variable(
        {}, "AGENTSTREAM_REPLICAS",
        "`r0=http://host:port,r1=...`: a pool of model replicas behind the KV-affinity dispatcher; set, every "
        "model call waits for the dispatcher's choice",
    )  # fmt: skip
    policy: DispatchPolicy = variable("agentstream", "AGENTSTREAM_KV_POLICY", "the dispatcher's placement policy")
    pin_ttl_s: NonNegativeFloat = variable(
        30.0, "AGENTSTREAM_KV_PIN_TTL_S", "how long a session's pin outlives its turn (across tool gaps)"
    )
    high_watermark: PositiveFloat = variable(
        0.95, "AGENTSTREAM_KV_HIGH_WATERMARK", "new sessions only while the estimated KV is under this x capacity"
    )
    session_watermark: NonNegativeFloat = variable(
        0.8, "AGENTSTREAM_KV_SESSION_WATERMARK",
        "... and sessions x the mean session size under this x capacity (0 turns this check off)",
    )  # fmt: skip
    lookahead_turns: NonNegativeFloat = variable(
        1.0, "AGENTSTREAM_KV_LOOKAHEAD_TURNS", "a session counts for its context plus this many turns' growth"
    )
    max_queue_wait_s: NonNegativeFloat | None = variable(
        None, "AGENTSTREAM_KV_MAX_QUEUE_WAIT_S",
        "if set, the longest a new session waits for room before it is placed over the estimate",
        shown_default="unset: until there is room",
    )  # fmt: skip
    probe_interval_s: PositiveFloat = variable(
        0.5, "AGENTSTREAM_KV_PROBE_INTERVAL_S", "seconds between probes of the replicas"
    )
