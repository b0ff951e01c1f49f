"""Failure-mode mining: flagged trajectories clustered by how they failed, and clusters exported
as regression cases (docs/evaluation.md, "Failure-mode mining")."""
