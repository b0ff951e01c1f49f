"""Context as a managed resource: what each turn's prompt holds, decided purely from the journal.

`settings` parses a run's context settings, `tokens` estimates a prompt's size as the provider
sees it, `compaction` plans and applies a compaction (clearing old tool results, summarizing old
turns). Every change it makes to a prompt is journaled as a `ContextCompacted` event, so replay
rebuilds every prompt byte for byte.
"""
