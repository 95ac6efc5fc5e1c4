"""A worker: claims tasks from the queue until none is left, answering each with a model.

The supervisor starts it as a child process, so runlog files this run under the
supervisor's (``PARENT_RUN_ID`` is inherited).  Each task is one ``task`` span holding
two OpenAI calls: a drafted answer (streamed for odd task ids, a plain call for even
ones) and a triage with structured output.  ``runlog.instrument_openai()`` turns each
call into an ``llm_call.completed`` event under the task's span; nothing here times
or counts tokens by hand.

The model endpoint comes from the environment, as the clients read it:
``OPENAI_API_KEY`` and, optionally, ``OPENAI_BASE_URL``.  With ``--provider anthropic``
the same work goes to Anthropic's Messages API instead (``ANTHROPIC_API_KEY``,
``ANTHROPIC_BASE_URL``): the draft with ``messages.create`` or the ``messages.stream()``
helper, the triage as a forced tool call; ``runlog.instrument_anthropic()`` logs them
the same way, with their cache tokens and cost.

``--crash-on-task ID`` injects a bug: half-way through task ID (its first attempt)
the worker raises an exception it never catches, so it dies holding the task.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Literal

from anthropic import Anthropic
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

import runlog

from tasks import APP_VERSION, Task, TaskQueue

SYSTEM_PROMPT = "You answer customer questions for a hosting company in two sentences."


class Triage(BaseModel):
    """What the triage call returns (structured output)."""

    category: Literal["billing", "technical", "account", "other"]
    urgent: bool


class SimulatedCrash(RuntimeError):
    """The bug ``--crash-on-task`` injects."""


def _claim_fields(task: Task | None) -> dict[str, Any]:
    """The fields of a ``task.claimed`` event; ``task_id`` is null when the queue was empty."""
    if task is None:
        return {"task_id": None}
    return {"task_id": task.id, "batch": task.batch, "attempt": task.attempt}


@runlog.traced_event("task.claimed", record_result=_claim_fields)
def claim_task(queue: TaskQueue, batch: int, worker: str) -> Task | None:
    """Take the next task of the batch (atomically, see tasks.py), or None if none is left."""
    return queue.claim(batch, worker)


def draft_answer(client: OpenAI, model: str, question: str, *, stream: bool) -> str:
    """Ask the model for an answer, streamed or not."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]
    if not stream:
        completion = client.chat.completions.create(model=model, messages=messages)
        return completion.choices[0].message.content or ""
    parts: list[str] = []
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def triage(client: OpenAI, model: str, question: str) -> Triage:
    """Classify the question with structured output."""
    completion = client.chat.completions.parse(
        model=model,
        messages=[
            {"role": "system", "content": "Classify the customer's question."},
            {"role": "user", "content": question},
        ],
        response_format=Triage,
    )
    parsed = completion.choices[0].message.parsed
    if parsed is None:
        raise ValueError(f"the model refused to classify: {completion.choices[0].message.refusal}")
    return parsed


def draft_answer_claude(client: Anthropic, model: str, question: str, *, stream: bool) -> str:
    """The same answer from Anthropic: a plain call, or the ``messages.stream()`` helper."""
    request: dict[str, Any] = {
        "model": model,
        "max_tokens": 512,
        "system": SYSTEM_PROMPT,
        "messages": [{"role": "user", "content": question}],
    }
    if not stream:
        message = client.messages.create(**request)
        return "".join(block.text for block in message.content if block.type == "text")
    with client.messages.stream(**request) as answer:
        return "".join(answer.text_stream)


def triage_claude(client: Anthropic, model: str, question: str) -> Triage:
    """Classify the question with a forced tool call whose input is the ``Triage``."""
    message = client.messages.create(
        model=model,
        max_tokens=256,
        messages=[{"role": "user", "content": f"Classify the customer's question: {question}"}],
        tools=[{"name": "triage", "input_schema": Triage.model_json_schema()}],
        tool_choice={"type": "tool", "name": "triage"},
    )
    for block in message.content:
        if block.type == "tool_use":
            return Triage.model_validate(block.input)
    raise ValueError(f"the model did not classify (stop reason {message.stop_reason})")


class Models:
    """The worker's provider: its client, model, and the two calls a task makes."""

    def __init__(self, provider: str, model: str, anthropic_model: str) -> None:
        self.provider = provider
        if provider == "anthropic":
            runlog.instrument_anthropic()
            self.claude, self.model = Anthropic(timeout=60.0, max_retries=2), anthropic_model
        else:
            # stream_usage: streamed calls get the API's exact usage, not a tiktoken estimate.
            runlog.instrument_openai(stream_usage=True)
            self.openai, self.model = OpenAI(timeout=60.0, max_retries=2), model

    def draft(self, question: str, *, stream: bool) -> str:
        if self.provider == "anthropic":
            return draft_answer_claude(self.claude, self.model, question, stream=stream)
        return draft_answer(self.openai, self.model, question, stream=stream)

    def triage(self, question: str) -> Triage:
        if self.provider == "anthropic":
            return triage_claude(self.claude, self.model, question)
        return triage(self.openai, self.model, question)


def handle(models: Models, queue: TaskQueue, task: Task, worker: str, crash_on: int | None) -> None:
    """Do one task inside a ``task`` span (task.started, then task.completed or task.failed)."""
    stream = task.id % 2 == 1
    with runlog.span("task", task_id=task.id, attempt=task.attempt) as span:
        answer = models.draft(task.prompt, stream=stream)
        if task.id == crash_on and task.attempt == 1:
            raise SimulatedCrash(f"{worker} crashed half-way through task {task.id}")
        verdict = models.triage(task.prompt)
        queue.complete(task, worker, answer)
        runlog.log_event(
            "result.recorded",
            {
                "task_id": task.id,
                "category": verdict.category,
                "urgent": verdict.urgent,
                "answer_chars": len(answer),
            },
        )
        span.set(category=verdict.category)
    how = "streamed" if stream else "plain"
    print(f"{worker}: task {task.id} answered ({how}), triaged as {verdict.category}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Claim and handle tasks until the batch has none left for this worker."""
    args = _parser().parse_args(argv)
    runlog.init(role="worker", instance_id=args.instance_id, version=APP_VERSION)
    models = Models(args.provider, args.model, args.anthropic_model)
    with TaskQueue(args.tasks_db) as queue:
        while (task := claim_task(queue, args.batch, args.instance_id)) is not None:
            handle(models, queue, task, args.instance_id, args.crash_on_task)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Claim and answer tasks until none is left.")
    parser.add_argument("--instance-id", required=True, help="long-lived name, e.g. worker-3")
    parser.add_argument("--tasks-db", required=True, help="the task queue file")
    parser.add_argument("--batch", type=int, required=True, help="the batch to work on")
    parser.add_argument("--model", default="gpt-4o-mini", help="chat model (gpt-4o-mini)")
    parser.add_argument("--provider", choices=["openai", "anthropic"], default="openai")
    parser.add_argument(
        "--anthropic-model", default="claude-haiku-4-5", help="Anthropic model (claude-haiku-4-5)"
    )
    parser.add_argument(
        "--crash-on-task", type=int, metavar="ID", help="die half-way through task ID (a demo)"
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
