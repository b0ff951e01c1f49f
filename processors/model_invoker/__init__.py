"""Model invoker: turns model-call requests into calls on a provider adapter."""
