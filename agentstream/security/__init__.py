"""Proofs that a platform component decided something: capabilities and signed approvals."""
