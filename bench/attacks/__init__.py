"""Attack attempts for bench/security.py: async functions that return True when the attack SUCCEEDED."""
