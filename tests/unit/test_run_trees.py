"""Run trees in the gateway: the projection links children to parents from RunRequested alone
(in any order, across an eviction, never across tenants), the run resource and `GET /tree` show
them, `POST /v1/runs` takes `workflow` and refuses `parent_run_id`, and a tree's event stream
resumes from any of its ids without a gap or a duplicate. In-process (httpx.ASGITransport), with
the journal twin of test_gateway_contract: no broker."""

from __future__ import annotations

import itertools
import time

import orjson
import pytest

from agentstream import ids
from agentstream.cli.commands import _run_via_api, _show_via_api
from agentstream.cli.main import parser
from agentstream.cli.trees import children_named, print_relations_from_journal, tree_via_api
from agentstream.client.http import InvalidRequest, NotFound
from agentstream.client.journal import JournalEntry
from agentstream.contract.resources import Run, RunTree
from agentstream.contract.vocab import RunStatus
from agentstream.events import (
    LlmCallRequested,
    RunCompleted,
    RunEvent,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
    WorkflowRegistered,
)
from agentstream.gateway.projection import RunIndex, new_view
from agentstream.gateway.tree_stream import parse_position, position_id
from agentstream.sse import parse_sse_bytes
from tests.unit.test_gateway_contract import OTHER, Api, create, refused
from tests.unit.test_gateway_contract import api as contract_api

api = contract_api  # the in-process gateway over the journal twin

_offsets = itertools.count(1000)


def request(run_id: str, tenant: str = "acme", parent: str = "", call: str = "", depth: int = 0) -> RunRequested:
    return RunRequested(
        ids.run_requested_id(run_id), run_id, tenant, f"task of {run_id}", "scripted", [], 5, run_id,
        parent_run_id=parent, parent_call_id=call, depth=depth,
    )  # fmt: skip


def ended(run_id: str, tenant: str = "acme") -> RunCompleted:
    return RunCompleted(ids.terminal_id(run_id), run_id, tenant, 1, f"answer of {run_id}", "done")


def apply(index: RunIndex, event: RunEvent, partition: int = 0) -> None:
    """As the tail applies a journal record."""
    index._apply(partition, next(_offsets), int(time.time() * 1000), index.codec.encode(event))


def registered(api: Api, name: str, *versions: str, tenant: str = "acme") -> None:
    """Workflow versions in the registry the gateway reads (a run naming another is refused)."""
    assert api.tools is not None
    for version in versions:
        api.tools.reader.catalog.apply(WorkflowRegistered(f"workflow/{tenant}/{name}/{version}", tenant, name,
                                                          version, "{}", "test", 0))  # fmt: skip


def call(parent: str, step: int, n: int = 0) -> str:
    return ids.tool_call_id(parent, step, n)


# -- the projection ------------------------------------------------------------------------------


def test_children_of_children_are_linked_in_the_order_they_were_asked_for(api: Api) -> None:
    index = api.journal.index
    apply(index, request("run_root"))
    # Read out of order (another partition came first): still listed by the parent's call order.
    apply(index, request("run_b", parent="run_root", call=call("run_root", 2), depth=1), partition=1)
    apply(index, request("run_a", parent="run_root", call=call("run_root", 1), depth=1), partition=2)
    apply(index, request("run_g", parent="run_a", call=call("run_a", 1), depth=2), partition=1)
    root = index.runs["run_root"]
    assert [c for c, _ in root.ordered_children()] == ["run_a", "run_b"]
    assert list(index.runs["run_a"].children) == ["run_g"]
    apply(index, ended("run_g"), partition=1)
    assert index.runs["run_a"].children["run_g"].status == RunStatus.COMPLETED
    resource = root.resource()
    assert (resource.children_count, [c.id for c in resource.children]) == (2, ["run_a", "run_b"])
    assert index.runs["run_g"].resource().parent_run_id == "run_a" and index.runs["run_g"].depth == 2


def test_a_child_read_before_its_parent_is_linked_when_the_parent_arrives(api: Api) -> None:
    index = api.journal.index
    apply(index, request("run_kid", parent="run_late", call=call("run_late", 1), depth=1), partition=3)
    apply(index, request("run_late"))
    assert list(index.runs["run_late"].children) == ["run_kid"]


def test_children_survive_the_parent_leaving_memory_and_being_read_back(api: Api) -> None:
    index = api.journal.index
    apply(index, request("run_p"))
    apply(index, request("run_c", parent="run_p", call=call("run_p", 1), depth=1), partition=1)
    apply(index, ended("run_c"), partition=1)
    apply(index, ended("run_p"))
    # What eviction does (projection._evict), then a read-back of the parent's own records.
    view = index.recent.pop("run_p")
    index.trees.left(view)
    # A child whose request is read while its parent is out of memory waits for the parent too.
    apply(index, request("run_c2", parent="run_p", call=call("run_p", 2), depth=1), partition=2)
    back = new_view(request("run_p"), 0, view.first_offset, view.created_ms)
    for stored in view.events:
        index.apply_event(back, stored.offset, stored.timestamp_ms, stored.event)
    assert back.children == {}  # the parent's own records do not name a child started by request alone
    index.hold(back)
    assert [c for c, _ in back.ordered_children()] == ["run_c", "run_c2"]
    assert back.children["run_c"].status == RunStatus.COMPLETED


def test_a_parent_read_back_knows_its_children_from_its_own_spawn_calls(api: Api) -> None:
    index = api.journal.index
    apply(index, request("run_q"))
    spawn = call("run_q", 1)
    apply(index, ToolCallRequested(ids.requested_event_id(spawn), "run_q", "acme", 1, spawn, "t1", "spawn_agent",
                                   "{}", spawn, 1000))  # fmt: skip
    assert list(index.runs["run_q"].children) == [ids.child_run_id(spawn)]


def test_another_tenants_child_is_never_linked(api: Api) -> None:
    index = api.journal.index
    apply(index, request("run_mine"))
    apply(index, request("run_theirs", tenant="globex", parent="run_mine", call="x", depth=1), partition=1)
    apply(index, request("run_sneak", tenant="globex", parent="run_later", call="y", depth=1), partition=1)
    apply(index, request("run_later"))
    assert index.runs["run_mine"].children == {} and index.runs["run_later"].children == {}


# -- the API -------------------------------------------------------------------------------------


async def test_tree_is_nested_bounded_and_tenant_scoped(api: Api) -> None:
    index = api.journal.index
    apply(index, request("run_top"))
    apply(index, request("run_mid", parent="run_top", call=call("run_top", 1), depth=1), partition=1)
    apply(index, request("run_leaf", parent="run_mid", call=call("run_mid", 1), depth=2), partition=2)
    apply(index, ended("run_leaf"), partition=2)
    apply(index, request("run_alien", tenant="globex", parent="run_top", call="z", depth=1), partition=3)
    tree = RunTree.model_validate_json((await api.client.get("/v1/runs/run_top/tree")).content)
    assert (tree.runs, tree.truncated, tree.root.children_count) == (3, False, 1)
    mid = tree.root.children[0]
    assert (mid.id, mid.parent_run_id, mid.depth) == ("run_mid", "run_top", 1)
    assert (mid.children[0].id, mid.children[0].status, mid.children[0].result) == (
        "run_leaf", RunStatus.COMPLETED, "answer of run_leaf"
    )  # fmt: skip
    for run_id in ("run_top", "run_mid", "run_leaf"):  # another tenant's key: any node is a 404
        other = await api.client.get(f"/v1/runs/{run_id}/tree", headers={"Authorization": OTHER})
        refused(other, 404, "not_found")
    alien = await api.client.get("/v1/runs/run_alien/tree", headers={"Authorization": OTHER})
    assert alien.json()["root"]["children"] == [] and alien.json()["root"]["parent_run_id"] == "run_top"
    run = Run.model_validate_json((await api.client.get("/v1/runs/run_mid")).content)
    assert (run.parent_run_id, run.depth, [c.id for c in run.children]) == ("run_top", 1, ["run_leaf"])
    async with api.sdk() as sdk:
        assert (await sdk.tree("run_top")).root.children[0].id == "run_mid"
    async with api.sdk(OTHER) as sdk:
        with pytest.raises(NotFound):
            await sdk.tree("run_top")


async def test_a_client_cannot_start_a_child_run(api: Api) -> None:
    r = await create(api, {"task": "t", "parent_run_id": "run_0123456789abcdef01234567"})
    assert "started only by their parent" in refused(r, 422, "invalid_field", "parent_run_id")
    assert api.journal.appended == []
    r = await create(api, {"task": "t", "workflow_version": "3"})
    assert "workflow_version needs workflow" in refused(r, 422, "invalid_field", "body")
    r = await create(api, {"task": "t", "workflow": "bad name!"})
    refused(r, 422, "invalid_field", "workflow")


async def test_a_workflow_run_is_journaled_with_its_workflow(api: Api) -> None:
    refused(await create(api, {"task": "t", "workflow": "triage"}, key="wf-0"), 422, "unknown_workflow", "workflow")
    registered(api, "triage", "1", "2")
    unknown = await create(api, {"task": "t", "workflow": "triage", "workflow_version": "9"}, key="wf-0")
    assert "versions: 1, 2" in refused(unknown, 422, "unknown_workflow", "workflow")
    r = await create(api, {"task": "t", "workflow": "triage", "workflow_version": "2"}, key="wf-1")
    assert r.status_code == 201, r.text
    assert (r.json()["workflow"], r.json()["workflow_version"]) == ("triage", "2")
    requested = api.journal.appended[-1]
    assert isinstance(requested, RunRequested)
    assert (requested.workflow, requested.workflow_version, requested.parent_run_id) == ("triage", "2", "")
    # The same key and body name the same run; without the workflow it is another request.
    again = await create(api, {"task": "t", "workflow": "triage", "workflow_version": "2"}, key="wf-1")
    assert again.status_code == 200
    refused(await create(api, {"task": "t"}, key="wf-1"), 409, "idempotency_conflict", "Idempotency-Key")
    async with api.sdk() as sdk:
        run = await sdk.create("t", workflow="triage")
        with pytest.raises(InvalidRequest):
            await sdk.create("t", workflow_version="1")
    assert (run.workflow, run.workflow_version) == ("triage", None)


async def test_a_tree_stream_resumes_from_any_of_its_ids_without_gap_or_duplicate(api: Api) -> None:
    index = api.journal.index
    apply(index, request("run_s"), partition=0)
    for n, partition in ((1, 1), (2, 2)):
        child = f"run_s{n}"
        apply(index, request(child, parent="run_s", call=call("run_s", n), depth=1), partition=partition)
        apply(index, RunStarted(ids.run_started_id(child), child, "acme", "scripted", "[]", 5, ""), partition=partition)
        apply(index, ended(child), partition=partition)
    apply(index, request("run_s1a", parent="run_s1", call=call("run_s1", 1), depth=2), partition=2)
    apply(index, ended("run_s1a"), partition=2)
    apply(index, ended("run_s"), partition=0)

    async def stream(last: str = "") -> list[tuple[str, str, int]]:
        headers = {"Last-Event-ID": last} if last else {}
        r = await api.client.get("/v1/runs/run_s/events", params={"tree": "true"}, headers=headers)
        assert r.status_code == 200, r.text
        return [(m.id or "", orjson.loads(m.data)["run_id"], orjson.loads(m.data)["offset"])
                for m in parse_sse_bytes(r.content)]  # fmt: skip

    whole = await stream()
    assert {run for _, run, _ in whole} == {"run_s", "run_s1", "run_s2", "run_s1a"} and len(whole) == 10
    for cut in range(len(whole)):
        assert await stream(whole[cut][0]) == whole[cut + 1 :]
    # A plain offset is a position in the root's own partition: every child's event still comes.
    root_first = next(offset for _, run, offset in whole if run == "run_s")
    assert [e for e in await stream(str(root_first)) if e[1] == "run_s"] == [e for e in whole if e[1] == "run_s"][1:]
    assert len(await stream(str(root_first))) == len(whole) - 1
    async with api.sdk() as sdk:
        got = [(m.id, m.run_id) async for m in sdk.tree_events("run_s", last_event_id=whole[3][0])]
    assert got == [(i, run) for i, run, _ in whole[4:]]
    refused(await api.client.get("/v1/runs/run_s/events", headers={"Last-Event-ID": "0:1.x"}), 400, "invalid_header",
            "Last-Event-ID")  # fmt: skip


def test_tree_positions_round_trip() -> None:
    position = {3: 877, 0: 1520}
    assert position_id(position) == b"0:1520.3:877"
    assert parse_position("0:1520.3:877", 9) == {0: 1520, 3: 877}
    assert parse_position("42", 5) == {5: 42} and parse_position("", 5) == {}


# -- the CLI -------------------------------------------------------------------------------------


async def test_cli_creates_a_workflow_run_and_prints_trees(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    registered(api, "triage", "4")
    args = parser().parse_args(["run", "triage this", "--workflow", "triage@4"])
    async with api.sdk() as sdk:
        assert await _run_via_api(sdk, args) == 0
        requested = api.journal.appended[-1]
        assert isinstance(requested, RunRequested) and (requested.workflow, requested.workflow_version) == (
            "triage",
            "4",
        )
        root = requested.run_id
        index = api.journal.index
        kid = call(root, 1)
        apply(index, request(ids.child_run_id(kid), parent=root, call=kid, depth=1), partition=1)
        apply(index, ended(ids.child_run_id(kid)), partition=1)
        capsys.readouterr()
        assert await tree_via_api(sdk, root, as_json=False) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"{root} (queued, 0 steps) [workflow triage]")
        assert lines[1] == f"  {ids.child_run_id(kid)} (completed, 1 steps): 'task of {ids.child_run_id(kid)}'" \
            f" -> answer of {ids.child_run_id(kid)}"  # fmt: skip
        assert await _show_via_api(sdk, root, as_json=False) == 0
        shown = capsys.readouterr().out
        assert "workflow: triage@4" in shown and "children (1):" in shown and "-> answer of" in shown
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "t", "--workflow", "bad name@1"])
    assert parser().parse_args(["runs", "tree", root, "--json"]).runs_command == "tree"


def test_graph_nodes_and_spawned_children_are_read_from_a_runs_own_journal(capsys: pytest.CaptureFixture[str]) -> None:
    run = "run_graph"
    model, tool = f"{run}/g/draft.1", f"{run}/g/check.1"
    sub = f"{run}/g/sub.1"
    events: list[RunEvent] = [
        request(run),
        LlmCallRequested(ids.requested_event_id(model), run, "acme", 1, model, "m", "[]", "[]", 100),
        ToolCallRequested(ids.requested_event_id(tool), run, "acme", 1, tool, "t", "lookup", "{}", tool, 1000),
        ToolCallCompleted(ids.completed_event_id(tool), run, "acme", 1, tool, "lookup", tool, "x", True, 1.0),
        ToolCallCompleted(ids.completed_event_id(sub), run, "acme", 1, sub, "spawn_agent", sub, "hi", False, 1.0),
    ]
    entries = [JournalEntry(event, n, n) for n, event in enumerate(events)]
    assert children_named(entries) == [ids.child_run_id(f"{run}/g/sub.1")]
    print_relations_from_journal(entries)
    out = capsys.readouterr().out
    assert "draft.1                  model: asked" in out and "check.1                  lookup: error" in out
    assert "sub.1                    subagent: done" in out and ids.child_run_id(f"{run}/g/sub.1") in out
