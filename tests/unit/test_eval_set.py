"""bench/eval.py's labelled set: regenerated deterministically, half clean, every broken kind, scored
as the bench reports it."""

from __future__ import annotations

import json
from collections import Counter

from agentstream.events import EvalVerdict
from bench.eval import SET, score
from bench.eval_cases import KINDS, POLICY, build


def test_the_committed_set_is_what_regenerate_writes() -> None:
    stored = json.loads(SET.read_text())
    assert stored == {"policy": POLICY, "trajectories": build(200)}, "run: .venv/bin/python bench/eval.py --regenerate"
    labels = Counter(case["label"] for case in stored["trajectories"])
    assert labels["clean"] == 100 and set(labels) == {"clean", *KINDS} and min(labels.values()) >= 16


def test_the_score_counts_flagged_broken_and_false_positives() -> None:
    cases = [
        {"name": "a", "label": "clean"},
        {"name": "b", "label": "repetition"},
        {"name": "c", "label": "intent_mismatch"},
    ]
    verdict = EvalVerdict("v", "r", "t", 1, "repetition", "warning", "again", "{}", "1")
    result = score(cases, {"b": [verdict]}, {"a", "b", "c"})
    assert (result["trajectories"], result["broken"], result["flagged_broken"], result["false_positives"]) == (
        3,
        2,
        1,
        0,
    )
    assert result["by_kind"]["repetition"] == {"n": 1, "flagged": 1}
    assert result["by_kind"]["intent_mismatch"] == {"n": 1, "flagged": 0}
