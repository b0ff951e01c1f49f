"""Code-mode tool calling: the model answers with a Python program that calls the run's tools as
functions (`run_code`). The interface it sees is generated from the tool registry's JSON Schemas
(interface.py); the program runs in the sandbox (sandbox_runner.py, launched by the tool executor)
and is re-executed deterministically, round after round, by the orchestrator
(processors/orchestrator/codemode.py), so every tool call it makes is a journaled, gated call."""
