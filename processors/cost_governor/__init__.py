"""The cost governor: reserves before every model and tool call, settles after, halts at caps."""
