"""OpenTelemetry traces of runs in the GenAI semantic conventions (metrics are agentstream/metrics)."""
