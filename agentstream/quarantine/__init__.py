"""Poison-output quarantine: a tool's output declared malicious since a time halts the live runs
that consumed it and flags the ended ones, reversibly (docs/security.md, "Tool quarantine")."""
