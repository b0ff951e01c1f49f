"""Event types: one frozen dataclass per Avro record under `schemas/`, in modules by where they are
written; every name is importable from `agentstream.events` itself.

- base: `Event`, `RunEvent`, the registry the codec maps records through (`EVENT_TYPES`), `event_key`
- run: a run's own journal (request, start, model and tool calls, its ending), `TERMINAL_TYPES`
- context: a run's context decisions (compactions of its prompt)
- evaluation: a run's assessments (the step checks' verdicts)
- judge: a judge model's grade of a run
- gates: what stands between a run and its calls (policy, approvals, authorization, budgets, loops,
  model routing)
- tables: the compacted tables beside the journal (tools, tenants and keys, secrets, control, status)
- workflows: the workflow registry's versions (beside the tools)
"""

from __future__ import annotations

# Each module's `__all__` is the package's: one list of names per module, not a second one here.
from agentstream.events.base import *  # noqa: F403
from agentstream.events.context import *  # noqa: F403
from agentstream.events.evaluation import *  # noqa: F403
from agentstream.events.gates import *  # noqa: F403
from agentstream.events.judge import *  # noqa: F403
from agentstream.events.run import *  # noqa: F403
from agentstream.events.tables import *  # noqa: F403
from agentstream.events.workflows import *  # noqa: F403
