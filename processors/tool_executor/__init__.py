"""The tool executor: runs built-in and MCP tools for ToolCallRequested events."""
