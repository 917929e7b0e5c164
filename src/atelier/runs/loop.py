"""The agent loop: call the model, stream its reply, run the tools it asks for, repeat.

What the run has said and done lives in a ``Transcript``; whatever stops the loop, the
transcript says what is still unsaved (a reply being streamed, tool calls without their
results), and the supervisor has the recorder save it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from atelier.budgets import enforcement as budgets
from atelier.db.base import utcnow
from atelier.llm.base import (
    ChatMessage,
    ChatModel,
    ModelRequest,
    Stop,
    TextDelta,
    ToolCall,
    ToolResult,
    UsageReport,
)
from atelier.llm.models import CatalogModel
from atelier.llm.offline import estimate_request, estimate_tokens
from atelier.runs.approvals import Decision
from atelier.runs.events import (
    ErrorCode,
    MessageDelta,
    ToolCompleted,
    ToolStarted,
)
from atelier.runs.outcome import COMPLETED, AwaitingApproval, Outcome
from atelier.runs.recorder import Recorder
from atelier.runs.spec import AgentSpec
from atelier.runs.tools import Tools
from atelier.usage.cost import Prices
from atelier.usage.cost import cost as charge

COMPACT_AFTER = 256  # pieces of a streamed reply kept apart before they are joined


@dataclass
class Transcript:
    """The conversation as the model sees it, and what this run has not saved yet."""

    messages: list[ChatMessage]
    streaming: list[str] | None = None  # the reply being streamed
    usage: UsageReport = field(default_factory=UsageReport)
    calls: list[ToolCall] = field(default_factory=list)  # stored, results not yet
    results: list[ToolResult] = field(default_factory=list)
    produced: int = 0  # output tokens so far
    prompt_tokens: int = 0  # our estimate of what the call under way was sent
    # When the call under way was sent, and when its first output came.
    sent_at: datetime | None = None
    first_output_at: datetime | None = None


class AgentLoop:
    def __init__(
        self,
        spec: AgentSpec,
        model: CatalogModel,
        provider: ChatModel,
        tools: Tools | None,
        recorder: Recorder,
        transcript: Transcript,
        *,
        on_progress: Callable[[], None],
        on_first_output: Callable[[], None],
        decisions: dict[str, Decision] | None = None,
    ) -> None:
        self.spec = spec
        self.model = model
        self.provider = provider
        self.tools = tools
        self.recorder = recorder
        self.transcript = transcript
        self.progress = on_progress
        self._first_output: Callable[[], None] | None = on_first_output
        self.decisions = decisions or {}  # a person's word on calls, by call id

    async def run(self) -> Outcome:
        spec, transcript = self.spec, self.transcript
        if transcript.calls:  # resumed once a person decided: the calls it waited with
            await self._run_tools(transcript.calls)
        for _ in range(spec.max_steps):
            budget = min(
                spec.max_output_tokens - transcript.produced,
                self.model.max_output_tokens or spec.max_output_tokens,
            )
            if budget <= 0:
                return Outcome.failed(
                    ErrorCode.OUTPUT_LIMIT, "the run used its whole output token budget"
                )
            request = self._request(budget)
            worst_case = charge(
                UsageReport(input_tokens=estimate_request(request), output_tokens=budget),
                Prices.of(self.model),
            )
            refused = await self.recorder.reserve(worst_case or Decimal(0))
            if refused is not None:
                return Outcome.failed(
                    ErrorCode.BUDGET_EXCEEDED,
                    budgets.exceeded(refused).detail,
                )
            calls = await self._call_model(request)
            if not calls:
                return COMPLETED
            client = spec.client_tool_names
            waiting = [
                c
                for c in calls
                if c.id not in self.decisions and (c.name in client or spec.approval.needs(c.name))
            ]
            if waiting:
                raise AwaitingApproval(waiting)
            await self._run_tools(calls)
        return Outcome.failed(
            ErrorCode.STEP_LIMIT, f"the run used all {spec.max_steps} of its steps"
        )

    async def _run_tools(self, calls: list[ToolCall]) -> None:
        """Each call in order (a denied one is the tool's error, with the person's reason;
        a client tool's is the result its caller sent), then their results, saved."""
        assert self.tools is not None
        for call in calls:
            self.progress()
            self.recorder.events.emit(
                ToolStarted(call_id=call.id, name=call.name, input=call.arguments)
            )
            decision = self.decisions.get(call.id)
            if decision is not None and decision.client:
                result = _client_result(call, decision)
            elif decision is not None and not decision.approved:
                denial = "a person denied this call" + (
                    f": {decision.reason}" if decision.reason else ""
                )
                result = ToolResult(call.id, denial, is_error=True)
            else:
                started = time.monotonic()
                result = await self.tools.call(call)
                took = round((time.monotonic() - started) * 1000)
                result = replace(result, duration_ms=took)
            if decision is not None and not decision.client:  # kept with the result
                result = replace(result, decision="approved" if decision.approved else "denied")
            self.transcript.results.append(result)
            self.recorder.events.emit(
                ToolCompleted(
                    call_id=call.id,
                    name=call.name,
                    output=result.content,
                    is_error=result.is_error,
                )
            )
        await self.save_results()

    def _request(self, max_tokens: int) -> ModelRequest:
        return ModelRequest(
            model=self.model.provider_model_id,
            messages=self.transcript.messages,
            system=self.spec.instructions,
            tools=[*(self.tools.specs if self.tools is not None else []), *self.spec.client_tools],
            max_tokens=max_tokens,
        )

    async def _call_model(self, request: ModelRequest) -> list[ToolCall]:
        transcript, emit = self.transcript, self.recorder.events.emit
        transcript.streaming, transcript.usage = [], UsageReport()
        transcript.prompt_tokens = estimate_request(request)
        transcript.sent_at, transcript.first_output_at = utcnow(), None
        calls: list[ToolCall] = []
        stop: str | None = None
        self.progress()
        stream = self.provider.stream(request)
        try:
            async for event in stream:
                self.progress()
                if transcript.first_output_at is None:
                    transcript.first_output_at = utcnow()
                if self._first_output is not None:
                    self._first_output()
                    self._first_output = None
                if isinstance(event, TextDelta):
                    transcript.streaming.append(event.text)
                    if len(transcript.streaming) >= COMPACT_AFTER:  # a long reply stays one string
                        transcript.streaming[:] = ["".join(transcript.streaming)]
                    emit(MessageDelta(text=event.text))
                elif isinstance(event, ToolCall):
                    calls.append(event)
                elif isinstance(event, UsageReport):
                    transcript.usage = event
                elif isinstance(event, Stop):
                    stop = event.reason
        finally:
            # Closes the provider's connection now, also when the run is stopped mid-stream.
            await stream.aclose()  # type: ignore[attr-defined]
        reply = "".join(transcript.streaming)
        # A reply the output limit cut off is kept, and marked for what it is.
        await self.recorder.reply(
            reply,
            calls,
            transcript.usage,
            incomplete=stop == "max_tokens",
            stop_reason=stop,
            prompt_tokens=transcript.prompt_tokens,
            timing=(transcript.sent_at, transcript.first_output_at),
        )
        transcript.streaming = None
        transcript.produced += transcript.usage.output_tokens or estimate_tokens(reply)
        transcript.messages.append(ChatMessage("assistant", reply, tool_calls=tuple(calls)))
        transcript.calls, transcript.results = list(calls), []
        return calls

    async def save_results(self) -> None:
        transcript = self.transcript
        results = await self.recorder.tool_results(transcript.calls, transcript.results)
        transcript.calls, transcript.results = [], []
        transcript.messages.append(ChatMessage("tool", tool_results=tuple(results)))

    async def save_unsaved(self) -> None:
        """What a stopped run leaves: the reply it was streaming, tool calls without results."""
        transcript = self.transcript
        if transcript.streaming is not None:
            await self.recorder.reply(
                "".join(transcript.streaming),
                [],
                transcript.usage,
                incomplete=True,
                stop_reason=None,
                prompt_tokens=transcript.prompt_tokens,
                timing=(transcript.sent_at, transcript.first_output_at),
            )
            transcript.streaming = None
        if transcript.calls:
            await self.save_results()


def _client_result(call: ToolCall, decision: Decision) -> ToolResult:
    """What the caller sent for its tool's call -- or, when nothing came in time, why."""
    if decision.approved and decision.output is not None:
        return ToolResult(call.id, decision.output, is_error=decision.is_error)
    reason = decision.reason or "no result came"
    return ToolResult(call.id, f"the caller gave no result for this call: {reason}", True)


def first_output_timer(observe: Callable[[float], None]) -> Callable[[], None]:
    started = time.monotonic()
    return lambda: observe(time.monotonic() - started)
