"""The orchestrator: drives each run's ReAct loop as a pure function of its journal."""
