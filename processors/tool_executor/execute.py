"""Performs one ToolCallAuthorized: the only code path that runs a tool.

Before anything runs: the capability must verify (bound to this call, tool version and exact
arguments) and be unexpired, the pinned version must exist, and its kill switch must be off. The
tool's secrets are redeemed from the credential broker only now, and scrubbed from its output.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from agentstream import ids
from agentstream.chaos import crash_point
from agentstream.credentials.delegation import CredentialBroker
from agentstream.credentials.errors import CredentialError
from agentstream.events import RunEvent, ToolCallAuthorized, ToolCallCompleted
from agentstream.journal_limits import TOOL_RESULT_LIMIT_CHARS
from agentstream.processors.tool_executor.offload import ResultOffloader
from agentstream.processors.tool_executor.registry_host import RegistryToolHost
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import ToolEntry
from agentstream.registry.pins import identity_of, resolve_pin
from agentstream.security.signing import Signer, capability_problem, capability_verifies
from agentstream.tooling import CURRENT_CREDENTIALS, ToolResult

# A longer result is cut (and says so): its ToolCallCompleted must fit a journal record, whatever
# the tool returned. A reply too large to read at all is already refused by the transport
# (stdio_transport.MAX_MESSAGE_BYTES, remote_http's cap) as an error observation.
MAX_RESULT_CHARS = TOOL_RESULT_LIMIT_CHARS
REDACTED = "[REDACTED]"
INTERRUPTED = (
    "ERROR: {tool}: tool call may have run before a crash; not retried (non-idempotent). "
    "Whether its effect happened is unknown: check before calling it again."
)
log = logging.getLogger(__name__)


class ToolExecutor:
    def __init__(
        self,
        host: RegistryToolHost,
        catalog: ToolCatalog,
        capability: Signer,
        broker: CredentialBroker | None,
        clock: Callable[[], int],
        offloader: ResultOffloader | None = None,
    ) -> None:
        self.host = host
        self.offloader = offloader
        self.catalog = catalog
        self.capability = capability
        self.broker = broker
        self.clock = clock
        self.refused = 0

    def admits(self, request: ToolCallAuthorized) -> bool:
        """Only authorizations the policy gate signed enter the ledger: a forged one can neither
        run nor occupy the slot of the genuine call with the same id."""
        ok = capability_verifies(self.capability, request)
        if not ok:
            self.refused += 1
            log.warning("refused an authorization that does not verify for call %s", request.call_id)
        return ok

    def at_most_once(self, request: ToolCallAuthorized) -> bool:
        """Whether a call interrupted by a crash must not be run again: its tool may have an effect
        (not read-only) and does not dedupe on the idempotency key (not declared idempotent)."""
        entry = resolve_pin(self.catalog, request.tenant_id, request.tool, request.tool_version)
        # An unknown version never runs (see _precheck), so running "it" again does nothing either.
        return entry is not None and not entry.idempotent and entry.tier != "read_only"

    def interrupted(self, request: ToolCallAuthorized) -> list[RunEvent]:
        """The result of an at-most-once call that a crash interrupted: an error observation."""
        return [self._completed(request, INTERRUPTED.format(tool=request.tool), is_error=True, duration_ms=0.0)]

    async def perform(self, request: ToolCallAuthorized) -> list[RunEvent]:
        started = time.perf_counter()
        secrets: Mapping[str, str] = {}
        checked = self._precheck(request)
        if isinstance(checked, ToolResult):
            result = checked
        else:
            secrets, refused = await self._redeem(request, checked)
            result = refused or await self._run_with(secrets, request, checked)

        content = _scrub(result.content, secrets)
        blob = ""
        # A large result (scrubbed first) goes to the blob store; the journal keeps its preview. Not
        # the result of a tool the tenant tracks as private: the policy gate learns its taint from
        # the journaled text, which must stay whole for it (cut at the cap, as before).
        if self.offloader is not None and self.offloader.wants(content) and not self._private(request):
            offloaded = await self.offloader.put(request, content)
            if offloaded is not None:
                content, blob = offloaded
        if len(content) > MAX_RESULT_CHARS:
            content = content[:MAX_RESULT_CHARS] + f"\n[truncated: {len(content)} characters in all]"
        duration_ms = (time.perf_counter() - started) * 1000.0
        return [self._completed(request, content, result.is_error, duration_ms, result_blob=blob)]

    def _private(self, request: ToolCallAuthorized) -> bool:
        return self.catalog.policy(request.tenant_id).is_private(request.tool)

    @staticmethod
    def _completed(
        request: ToolCallAuthorized, content: str, is_error: bool, duration_ms: float, *, result_blob: str = ""
    ) -> ToolCallCompleted:
        return ToolCallCompleted(
            # One id per call, whoever writes it: a late real result and this one dedupe downstream.
            event_id=ids.completed_event_id(request.call_id),
            run_id=request.run_id,
            tenant_id=request.tenant_id,
            step=request.step,
            call_id=request.call_id,
            tool=request.tool,
            idempotency_key=request.idempotency_key,
            content=content,
            is_error=is_error,
            duration_ms=duration_ms,
            result_blob=result_blob,
        )

    async def _run_with(self, secrets: Mapping[str, str], request: ToolCallAuthorized, entry: ToolEntry) -> ToolResult:
        token = CURRENT_CREDENTIALS.set(secrets)
        try:
            result = await self._run(request, entry)
        finally:
            CURRENT_CREDENTIALS.reset(token)
        crash_point("tool_after_effect")  # the window idempotency keys exist to close
        return result

    def _precheck(self, request: ToolCallAuthorized) -> ToolEntry | ToolResult:
        """The pinned version to run, or why the call must not run."""
        problem = capability_problem(self.capability, request, self.clock())
        if problem is not None:
            return ToolResult(f"NOT EXECUTED: {request.tool}: {problem}", is_error=True)
        # The exact tool the gate pinned and signed (owner, version, contract): never another
        # owner's tool that has the same name, nor a version whose record changed since.
        entry = resolve_pin(self.catalog, request.tenant_id, request.tool, request.tool_version)
        if entry is None:
            return ToolResult(f"NOT EXECUTED: {request.tool} v{request.tool_version} is not registered", is_error=True)
        switched = self.catalog.switched_off(entry)
        if switched is not None:
            return ToolResult(
                f"NOT EXECUTED: {request.tool} is disabled by an operator: {switched.reason}", is_error=True
            )
        return entry

    async def _redeem(
        self, request: ToolCallAuthorized, entry: ToolEntry
    ) -> tuple[Mapping[str, str], ToolResult | None]:
        if not request.delegation:
            return {}, None
        if self.broker is None:
            return {}, ToolResult(f"NOT EXECUTED: {request.tool} needs credentials; none are configured", is_error=True)
        try:
            secrets = await self.broker.exchange(
                request.delegation, tool=request.tool, run_id=request.run_id, call_id=request.call_id,
                now_ms=self.clock(), identity=identity_of(entry),
            )  # fmt: skip
        except CredentialError as exc:  # messages name secrets and tools, never values
            # The tool does not run: it would run without what it needs, or it is not the tool
            # the secret was granted to (SecretNotGranted: a same-named tool of another owner).
            refusal = f"NOT EXECUTED: {request.tool}: credentials refused ({type(exc).__name__}): {exc}"
            return {}, ToolResult(refusal, is_error=True)
        return secrets, None

    async def _run(self, request: ToolCallAuthorized, entry: ToolEntry) -> ToolResult:
        try:
            arguments: Any = orjson.loads(request.arguments_json or "{}")
        except orjson.JSONDecodeError as exc:
            return ToolResult(f"ERROR: arguments are not valid JSON: {exc}", is_error=True)
        if not isinstance(arguments, dict):
            return ToolResult("ERROR: arguments must be a JSON object", is_error=True)
        return await self.host.call(
            entry, arguments, idempotency_key=request.idempotency_key, tenant=request.tenant_id, run_id=request.run_id
        )


def _scrub(content: str, secrets: Mapping[str, str]) -> str:
    # A tool that echoes its credential must not put it in the journal, and from there the prompt.
    # Its common encodings too (defense in depth: the structural rule is that a tool never receives
    # a secret not granted to it). A split or otherwise transformed copy is not caught here.
    for value in secrets.values():
        for form in encoded_forms(value):
            content = content.replace(form, REDACTED)
    return content


def encoded_forms(value: str) -> list[str]:
    """The secret and its common encodings, longest first (so no form is left half-replaced):
    reversed, hex (both cases), base64 and base64url (padded and not)."""
    if len(value) < 8:
        return [value] if value else []  # a short value's encodings would redact ordinary text
    raw = value.encode()
    b64, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    forms = {value, value[::-1], raw.hex(), raw.hex().upper(), b64, b64.rstrip("="), url, url.rstrip("=")}
    return sorted(forms, key=len, reverse=True)
