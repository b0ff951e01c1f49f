"""Long-term memory: a tenant's files, read and written by path through the platform tools
`memory` (read-write) and `memory_view` (read-only), in the style of Anthropic's memory tool.

- paths: what a memory path may be (under /memories, no `..`, bounded)
- commands: the tools' arguments parsed into commands, and the pure text edits
- index: the path -> blob handle index, a projection of the compacted `memory` topic
- admin: the operator's listing and export (CLI, gateway)
"""

from agentstream.memory.paths import MEMORY_TOOL, MEMORY_TOOLS, MEMORY_VIEW_TOOL, ROOT, MemoryRefused

__all__ = ["MEMORY_TOOL", "MEMORY_TOOLS", "MEMORY_VIEW_TOOL", "ROOT", "MemoryRefused"]
