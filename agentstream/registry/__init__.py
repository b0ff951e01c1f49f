"""The tool registry: tool versions (tools.catalog topic), kill switches and tenant policies (control topic)."""
