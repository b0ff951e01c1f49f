"""The policy gate: decides allow / deny / needs-approval for every proposed tool call."""
