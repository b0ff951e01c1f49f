"""Explicit graph runs (workflows): their progress (state), its pure moves (progress), and the
hooks evolve (fold) and decide (plan) call for a run that follows a workflow."""
