"""Regression cases: a cluster's runs written to a file with their recorded journals, exactly as
journaled (each event's Avro single-object encoding, so a case written today decodes tomorrow
through the history schemas), for shadow replay and the test suite to replay."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agentstream.codec import AvroCodec, DecodeError
from agentstream.events import RunEvent
from agentstream.mining.signature import Cluster

FORMAT = "agentstream.regression-cases.v1"


class CaseFileError(ValueError):
    """A regression case file that cannot be read: the message says where and why."""


@dataclass(frozen=True, slots=True)
class Case:
    run_id: str
    signature: str
    events: list[RunEvent]


def export_cases(
    cluster: Cluster, runs: Mapping[str, Sequence[RunEvent]], codec: AvroCodec | None = None
) -> dict[str, Any]:
    codec = codec or AvroCodec()
    return {
        "format": FORMAT,
        "signature": cluster.signature.text,
        "cases": [
            {"run_id": run_id, "signature": cluster.signature.text,
             "events": [base64.b64encode(codec.encode(e)).decode() for e in runs[run_id]]}
            for run_id in cluster.runs
        ],
    }  # fmt: skip


def export_examples(
    clusters: Sequence[Cluster], runs: Mapping[str, Sequence[RunEvent]], per_cluster: int = 2
) -> dict[str, Any]:
    """A few runs of each cluster in one case file: a regression set that covers every failure mode."""
    codec = AvroCodec()
    cases = [
        case
        for c in clusters
        for case in export_cases(Cluster(c.signature, c.runs[:per_cluster]), runs, codec)["cases"]
    ]
    return {"format": FORMAT, "signature": f"{len(clusters)} failure signatures", "cases": cases}


def write_cases(path: Path, cases: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(cases))


def load_cases(path: Path, codec: AvroCodec | None = None) -> list[Case]:
    codec = codec or AvroCodec()
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CaseFileError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("cases"), list):
        raise CaseFileError(f"{path}: not a regression case file (format {FORMAT!r} with a list of cases)")
    cases = []
    for n, raw in enumerate(doc["cases"]):
        try:
            events = [codec.decode(base64.b64decode(item, validate=True)) for item in raw["events"]]
            run_id, signature = str(raw["run_id"]), str(raw["signature"])
        except (KeyError, TypeError, ValueError, DecodeError) as exc:
            raise CaseFileError(f"{path}: case {n}: {type(exc).__name__}: {exc}") from None
        if not all(isinstance(e, RunEvent) and e.run_id == run_id for e in events):
            raise CaseFileError(f"{path}: case {n}: holds an event that is not of run {run_id}")
        cases.append(Case(run_id, signature, [e for e in events if isinstance(e, RunEvent)]))
    return cases
