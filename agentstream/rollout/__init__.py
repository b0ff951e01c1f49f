"""Canary rings for orchestrator versions: a candidate rolled out ring by ring, promoted by an
operator, rolled back by an alert (docs/evaluation.md, "Versions and canary rings")."""
