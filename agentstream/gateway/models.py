"""Request bodies, validated strictly: unknown fields and out-of-range values are refused by name."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ToolName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
LabelKey = Annotated[str, Field(min_length=1, max_length=100)]


class CreateRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=100_000, description="What the agent should do.")
    model: str = Field(default="scripted", min_length=1, max_length=200)
    tools: list[ToolName] = Field(default_factory=list, max_length=100, description="Allowed tools; empty: all.")
    max_steps: int = Field(default=20, ge=1, le=100, description="Model calls before the run fails.")
    labels: dict[LabelKey, Annotated[str, Field(max_length=500)]] = Field(default_factory=dict, max_length=50)


class CancelRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="cancelled by the client", min_length=1, max_length=1000)
