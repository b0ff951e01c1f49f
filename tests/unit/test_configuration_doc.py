"""docs/configuration.md is the table the settings classes generate (`agentstream config
--markdown`): a setting added, renamed or changed without regenerating it fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentstream.settings import COMPONENTS, env_name
from agentstream.settings.table import markdown, rows

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def test_docs_configuration_is_the_generated_table() -> None:
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/configuration.md is out of date: run `agentstream config --markdown > docs/configuration.md`"
    )


def test_the_command_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentstream.cli.main", "config", "--markdown"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout == markdown()


def test_every_setting_has_one_variable_a_type_a_default_and_a_description() -> None:
    table = rows()
    names = [row[0] for row in table]
    assert len(names) == len(set(names)), "a variable is bound to two settings"
    assert len(names) == sum(len(cls.model_fields) for cls in COMPONENTS)
    for variable, kind, default, description, component in table:
        assert variable and kind and default and component, variable
        assert len(description) > 15 and "\n" not in description, variable
    assert env_name(COMPONENTS[0], "bootstrap_servers") == "KAFKA_BOOTSTRAP_SERVERS"
    row = next(r for r in table if r[0] == "AGENTSTREAM_MODEL_TIMEOUT_S")
    assert row[1:3] == ("number > 0", "`60.0`")
