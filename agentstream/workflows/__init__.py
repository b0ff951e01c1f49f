"""Explicit graphs (workflows): declarative definitions, their validation and registry book.

- definition: the pydantic models of a definition and `parse_workflow`, which validates it whole
- expressions: the small, safe condition language of branch edges (parsed here, never `eval`)
- checks: the graph checks run at registration (reachability, targets, bounded cycles, references)
- book: the registered versions as every process sees them (WorkflowRegistered records)
"""
