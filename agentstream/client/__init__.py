"""Client-side helpers for producing run requests and reading run journals."""
