"""The scripted model server: the project's one fake model provider.

It replays JSON scenarios over the real OpenAI Chat Completions and Anthropic Messages wire
protocols, so the real adapters are tested and benchmarked over real HTTP.
"""

from agentstream.doubles.scripted_model.runner import READY_PREFIX, running_scripted_model
from agentstream.doubles.scripted_model.scenarios import Scenario, load_scenarios, parse_scenario
from agentstream.doubles.scripted_model.server import ScriptedModelServer

__all__ = [
    "READY_PREFIX",
    "Scenario",
    "ScriptedModelServer",
    "load_scenarios",
    "parse_scenario",
    "running_scripted_model",
]
