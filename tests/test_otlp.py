"""``runlog export otlp`` against a real OTLP/HTTP receiver, on databases made by real
process trees, and trace context crossing processes (TRACEPARENT, PARENT_SPAN_ID).

The receiver (``otlp_receiver``) decodes the wire protobuf with ``opentelemetry-proto``;
nothing of the exporter is mocked.  Every count is checked against the table read with
plain sqlite3.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_example import SUPERVISOR_ARGS, TASKS, WORKERS, run_example

import runlog
from runlog import _propagation
from runlog._cli import main

from otlp_receiver import Receiver
from support import child_env, python, rows, script, spawn, spawned

TREE = """
import multiprocessing as mp, os, subprocess, sys
from concurrent.futures import ProcessPoolExecutor
import runlog

def work(kind):
    runlog.init(role="worker", instance_id=kind)
    with runlog.span("task", kind=kind):
        runlog.log_event("task.claimed", {"kind": kind})

def pool_job(x):
    runlog.log_event("pool.job", {"x": x})
    return x

@runlog.traced_event("supervisor.plan")
def plan():
    return 3

if __name__ == "__main__":
    runlog.init(role="supervisor", instance_id="sup-1", version="9.9")
    runlog.log_event("outside", {"n": 1})
    plan()
    with runlog.span("spawning", wave=1):
        runlog.log_event("inside", {"nested": {"a": 1}, "tags": ["x", "y"]})
        for method in ("fork", "spawn", "forkserver"):
            p = mp.get_context(method).Process(target=work, args=(method,))
            p.start(); p.join()
        subprocess.run([sys.executable, "-c", "import runlog; runlog.init(role='worker', "
                        "instance_id='subprocess'); runlog.log_event('hello')"], check=True)
        crash = subprocess.run([sys.executable, "-c", "import runlog; runlog.init(role='worker',"
                                " instance_id='crasher'); raise RuntimeError('boom')"])
        assert crash.returncode == 1
        pid = os.fork()
        if pid == 0:
            work("os.fork")
            sys.exit(0)
        os.waitpid(pid, 0)
        pid = os.fork()
        if pid == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import runlog; "
                     "runlog.init(role='worker', instance_id='exec')"])
        os.waitpid(pid, 0)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            assert list(ex.map(pool_job, [1, 2])) == [1, 2]
        with runlog.llm_call("gpt-4o-mini") as call:
            call.record(input_tokens=11, output_tokens=7, finish_reason="stop",
                        response_model="gpt-4o-mini-2024", request_id="req_1",
                        response_id="chatcmpl-1")
        with runlog.llm_call("gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                             stream=True) as call:
            call.first_token()
            call.record(text="hello there")
        try:
            with runlog.llm_call("gpt-4o"):
                raise TimeoutError("slow")
        except TimeoutError:
            pass
    try:
        with runlog.span("doomed"):
            raise ValueError("bad")
    except ValueError:
        pass
"""


def export(db: Path | str, *args: str) -> int:
    """``runlog export otlp --db db ...`` in this process."""
    return main(["export", "otlp", "--db", str(db), *args])


def table_spans(db: Path) -> set[tuple[int, int]]:
    """(run_id, span_id) of every runlog span in the table (events written by a span)."""
    out = set()
    for row in rows(db):
        payload = row["payload"] or {}
        if "parent_span_id" in payload and isinstance(payload.get("span_id"), int):
            out.add((row["run_id"], payload["span_id"]))
    return out


def by_name(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database written by a supervisor and a child of every kind."""
    db = tmp_path_factory.mktemp("tree") / "tree.db"
    python(TREE, db)
    return db


@pytest.fixture
def receiver() -> Any:
    with Receiver() as r:
        yield r


def shipped(db: Path | str, receiver: Receiver, *args: str) -> list[dict[str, Any]]:
    before = len(receiver.spans)
    assert export(db, "--endpoint", receiver.endpoint, *args) == 0
    return receiver.spans[before:]


class TestTree:
    def test_one_trace_every_span_and_every_parent(self, tree: Path, receiver: Receiver) -> None:
        """One trace; a span per run and per runlog span; every parent link resolves."""
        spans = shipped(tree, receiver)
        started = rows(tree, "SELECT * FROM events WHERE event_type = 'process.started'")
        assert len({s["trace_id"] for s in spans}) == 1
        processes = [s for s in spans if s["name"].startswith("process ")]
        assert len(processes) == len(started)
        assert len(spans) == len(started) + len(table_spans(tree))
        ids = {s["span_id"] for s in spans}
        assert len(ids) == len(spans)
        roots = [s for s in spans if s["parent_span_id"] is None]
        assert [s["name"] for s in roots] == ["process supervisor"]
        assert all(s["parent_span_id"] in ids for s in spans if s is not roots[0])

    def test_children_hang_under_the_span_that_started_them(
        self, tree: Path, receiver: Receiver
    ) -> None:
        """Every kind of child (fork, spawn, forkserver, subprocess, os.fork, fork+exec,
        a pool worker, a crashing one) has the supervisor's ``spawning`` span as parent."""
        spans = shipped(tree, receiver)
        (spawning,) = by_name(spans, "spawning")
        children = [s for s in spans if s["name"].startswith("process ") and s["parent_span_id"]]
        kinds = sorted(str(s["resource"].get("service.instance.id")) for s in children)
        assert kinds == sorted(
            ["fork", "spawn", "forkserver", "subprocess", "crasher", "os.fork", "exec", "None"]
        )
        assert {s["parent_span_id"] for s in children} == {spawning["span_id"]}
        started = rows(tree, "SELECT * FROM events WHERE event_type = 'process.started'")
        assert all(r["payload"].get("parent_span_id") == 2 for r in started if r["parent_run_id"])

    def test_crashed_worker_and_failures_are_errors(self, tree: Path, receiver: Receiver) -> None:
        """A worker that died of an exception, a failed span and a failed LLM call: ERROR."""
        spans = shipped(tree, receiver)
        (crasher,) = [s for s in spans if s["resource"].get("service.instance.id") == "crasher"]
        assert crasher["status"] == "ERROR"
        assert crasher["attributes"]["error.type"] == "RuntimeError"
        assert crasher["attributes"]["process.exit.code"] == 1
        (doomed,) = by_name(spans, "doomed")
        assert (doomed["status"], doomed["status_message"]) == ("ERROR", "bad")
        assert doomed["attributes"]["error.type"] == "ValueError"
        (failed,) = by_name(spans, "chat gpt-4o")
        assert failed["status"] == "ERROR"
        assert failed["attributes"]["error.type"] == "TimeoutError"
        ok = [s for s in spans if s["status"] == "ERROR"]
        assert len(ok) == 3

    def test_llm_calls_are_genai_client_spans(self, tree: Path, receiver: Receiver) -> None:
        """GenAI attributes, CLIENT kind, start = end - latency, token sums = the table's."""
        spans = shipped(tree, receiver)
        llm = [s for s in spans if s["kind"] == "CLIENT"]
        table = rows(tree, "SELECT * FROM events WHERE event_type LIKE 'llm_call.%' ORDER BY id")
        assert len(llm) == len(table) == 3
        usage = next(s for s in llm if s["attributes"].get("gen_ai.response.id") == "chatcmpl-1")
        attributes = usage["attributes"]
        assert usage["name"] == "chat gpt-4o-mini"
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert attributes["gen_ai.response.model"] == "gpt-4o-mini-2024"
        assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
        assert attributes["gen_ai.usage.input_tokens"] == 11
        assert attributes["gen_ai.usage.output_tokens"] == 7
        assert attributes["gen_ai.request.stream"] is False
        assert attributes["runlog.request_id"] == "req_1"
        row = next(r for r in table if r["payload"].get("response_id") == "chatcmpl-1")
        assert usage["end"] == row["timestamp"]
        assert usage["end"] - usage["start"] == int(row["payload"]["latency_ms"] * 1e6)
        stream = next(s for s in llm if s["attributes"]["gen_ai.request.stream"] is True)
        assert "gen_ai.response.time_to_first_chunk" in stream["attributes"]
        for key in ("input_tokens", "output_tokens"):
            exported = sum(
                s["attributes"].get(f"gen_ai.usage.{key}", 0)
                + s["attributes"].get(f"runlog.usage.estimated_{key}", 0)
                for s in llm
            )
            assert exported == sum(r["payload"].get(key) or 0 for r in table)
        if stream["attributes"].get("runlog.token_source") == "tiktoken":
            assert "gen_ai.usage.output_tokens" not in stream["attributes"]
            assert stream["attributes"]["runlog.usage.estimated_output_tokens"] > 0

    def test_events_are_span_events_on_their_span(self, tree: Path, receiver: Receiver) -> None:
        """``inside`` sits on the span it was logged in, ``outside`` on the process span."""
        spans = shipped(tree, receiver)
        (spawning,) = by_name(spans, "spawning")
        (root,) = by_name(spans, "process supervisor")
        assert [e["name"] for e in spawning["events"]] == ["inside"]
        assert spawning["events"][0]["attributes"] == {"nested.a": 1, "tags": ["x", "y"]}
        assert [e["name"] for e in root["events"]] == ["outside"]
        assert spawning["attributes"]["wave"] == 1
        (plan,) = by_name(spans, "supervisor.plan")
        assert plan["parent_span_id"] == root["span_id"]
        assert root["resource"]["service.version"] == "9.9"
        assert root["resource"]["service.name"] == "runlog"

    def test_ids_are_identical_on_re_export(self, tree: Path, receiver: Receiver) -> None:
        """Two exports of the same table send exactly the same spans."""
        first = shipped(tree, receiver)
        second = shipped(tree, receiver)
        key = lambda s: s["span_id"]  # noqa: E731
        assert sorted(first, key=key) == sorted(second, key=key)

    def test_dry_run_json_prints_what_would_be_sent(
        self, tree: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--dry-run --json``: one span per line, the same ids, nothing sent."""
        spans = shipped(tree, receiver)
        capsys.readouterr()
        assert export(tree, "--dry-run", "--json", "--endpoint", receiver.endpoint) == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert {p["span_id"] for p in printed} == {s["span_id"] for s in spans}
        assert len(receiver.spans) == len(spans)

    def test_run_selects_a_subtree(self, tree: Path, receiver: Receiver) -> None:
        """``--run R`` sends R and what it started, with the ids of the whole export."""
        everything = {s["span_id"]: s for s in shipped(tree, receiver)}
        (fork,) = rows(
            tree,
            "SELECT * FROM events WHERE event_type = 'process.started'"
            " AND json_extract(payload, '$.instance_id') = 'fork'",
        )
        some = shipped(tree, receiver, "--run", str(fork["run_id"]))
        assert {s["name"] for s in some} == {"process worker", "task"}
        assert all(everything[s["span_id"]] == s for s in some)

    def test_since_selects_the_runs_active_since(self, tmp_path: Path, receiver: Receiver) -> None:
        """``--since`` (an ISO time here) sends the runs with an event at or after it."""
        from datetime import datetime

        db = tmp_path / "since.db"
        code = "import runlog\nrunlog.init(role='r')\nrunlog.log_event('x')"
        python(code, db)
        between = datetime.fromtimestamp(time.time_ns() // 1000 / 1e6).isoformat()
        python(code, db)
        started = [r["run_id"] for r in rows(db) if r["event_type"] == "process.started"]
        spans = shipped(db, receiver, "--since", between)
        assert len(started) == 2
        assert [s["resource"]["runlog.run_id"] for s in spans] == [max(started)]


class TestOpenRuns:
    def test_running_and_lost_runs_end_at_their_last_event(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """A run still running is exported up to now, marked; a killed one is ERROR (lost)."""
        db = tmp_path / "open.db"
        code = """
            import sys, runlog
            runlog.init(role="worker", instance_id=sys.argv[0][-5:])
            with runlog.span("waiting"):
                runlog.log_event("ready")
                runlog.flush()
                print("ready", flush=True)
                sys.stdin.readline()
        """
        alive, doomed = spawn(code, db), spawn(code, db)
        for proc in (alive, doomed):
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        doomed.kill()
        doomed.wait()
        spans = shipped(db, receiver)
        states = {s["resource"]["process.pid"]: s for s in spans if s["name"] == "process worker"}
        running, lost = states[alive.pid], states[doomed.pid]
        assert running["attributes"]["runlog.run.state"] == "running"
        assert running["status"] == "UNSET"
        assert (lost["attributes"]["runlog.run.state"], lost["status"]) == ("lost", "ERROR")
        waiting = by_name(spans, "waiting")
        assert len(waiting) == 2 and all(w["attributes"]["runlog.span.open"] for w in waiting)
        alive.communicate("\n", timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestFailures:
    def test_refused_is_one_line_and_nothing_counted_as_sent(
        self, tree: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An endpoint answering 401: exit 1, one line naming the status, 0 sent."""
        receiver.answers = [401]
        assert export(tree, "--endpoint", receiver.endpoint) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "refused" in err and "401" in err and "0 of" in err
        assert receiver.spans == []

    def test_unreachable_endpoint(self, tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Nothing listening: the exporter's retries end within --timeout, one line."""
        endpoint = f"http://127.0.0.1:{_free_port()}"
        assert export(tree, "--endpoint", endpoint, "--timeout", "1.5") == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"cannot reach {endpoint}/v1/traces" in err and "0 of" in err

    def test_transient_failure_is_retried(self, tree: Path, receiver: Receiver) -> None:
        """A 503 is retried by the exporter; every span arrives once."""
        receiver.answers = [503]
        spans = shipped(tree, receiver)
        assert [r["status"] for r in receiver.requests] == [503, 200]
        assert len({s["span_id"] for s in spans}) == len(spans)

    def test_partial_failure_reports_only_what_was_acknowledged(
        self, many: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The second batch refused: exactly the first batch is reported as sent."""
        db = many
        receiver.answers = [200, 400]
        assert export(db, "--endpoint", receiver.endpoint) == 1
        err = capsys.readouterr().err
        assert "512 of 701 spans were sent" in err and "400" in err
        assert len(receiver.spans) == 512

    def test_without_the_extra_says_what_to_install(
        self,
        tree: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """No OTLP exporter importable: one line naming runlog[otlp], exit 1, nothing read."""
        monkeypatch.setitem(
            sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None
        )
        assert export(tree) == 1
        assert "pip install 'runlog[otlp]'" in capsys.readouterr().err

    def test_bad_headers_are_a_usage_error(
        self, tree: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--headers that are not key=value pairs: one line, exit 1."""
        assert export(tree, "--headers", "nonsense", "--dry-run") == 1
        assert "key=value" in capsys.readouterr().err

    def test_long_export_on_a_terminal_shows_progress(
        self,
        many: Path,
        receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """More than one batch on a terminal: a progress bar while sending, every span sent."""
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("TTY_INTERACTIVE", "1")
        assert export(many, "--endpoint", receiver.endpoint) == 0
        assert len(receiver.spans) == 701
        assert "701/701" in capsys.readouterr().err


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of 701 spans: two batches."""
    db = tmp_path_factory.mktemp("many") / "many.db"
    python(
        """
        import runlog
        runlog.init(role="worker")
        for i in range(700):
            with runlog.span("item", i=i):
                pass
        """,
        db,
    )
    return db


class TestEnvironment:
    def test_standard_variables_choose_endpoint_headers_and_service(
        self, tree: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS and OTEL_SERVICE_NAME need no flag."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20abc,x-team=7")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
        assert export(tree) == 0
        request = receiver.requests[0]
        assert request["path"] == "/v1/traces"
        assert request["headers"]["authorization"] == "Basic abc"
        assert request["headers"]["x-team"] == "7"
        assert {s["resource"]["service.name"] for s in receiver.spans} == {"billing"}

    def test_traces_endpoint_and_flags_win(
        self, tree: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is; --headers adds to the env's."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint + "/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        assert export(tree, "--headers", "x-token=s3cr3t", "--service-name", "svc") == 0
        assert receiver.requests[0]["headers"]["x-token"] == "s3cr3t"
        assert {s["resource"]["service.name"] for s in receiver.spans} == {"svc"}


def follow(db: Path, receiver: Receiver) -> subprocess.Popen[str]:
    """``runlog export otlp --follow`` in a process of its own (killed if a test fails)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runlog", "export", "otlp", "--db", str(db), "--follow",
         "--endpoint", receiver.endpoint],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    spawned.append(proc)
    return proc


class TestFollow:
    def test_ships_new_spans_within_two_seconds_and_nothing_twice(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """--follow: a span written after it started arrives within 2 s, each span once."""
        db = tmp_path / "follow.db"
        python("import runlog\nrunlog.init(role='first')\nwith runlog.span('early'): pass", db)
        follower = follow(db, receiver)
        try:
            assert receiver.wait_for(lambda s: len(s) == 2, 30)
            worker = spawn(
                """
                import sys, runlog
                runlog.init(role="late")
                for line in sys.stdin:
                    with runlog.span(line.strip()):
                        pass
                    runlog.flush()
                    print("written", flush=True)
                """,
                db,
            )
            assert worker.stdin is not None and worker.stdout is not None
            for name in ("late-1", "late-2"):
                worker.stdin.write(name + "\n")
                worker.stdin.flush()
                assert worker.stdout.readline() == "written\n"
                written = time.monotonic()
                assert receiver.wait_for(lambda s, n=name: any(x["name"] == n for x in s), 2.0)
                assert time.monotonic() - written < 2.0
            worker.communicate("", timeout=30)
            assert receiver.wait_for(lambda s: any(x["name"] == "process late" for x in s), 5)
        finally:
            follower.send_signal(signal.SIGINT)
            _, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err
        counts = Counter(s["span_id"] for s in receiver.spans)
        assert set(counts.values()) == {1}
        assert sorted(s["name"] for s in receiver.spans) == sorted(
            ["process first", "early", "process late", "late-1", "late-2"]
        )

    def test_a_refused_batch_is_sent_again_at_the_next_poll(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """--follow through a refusal: said once, retried, every span arrives once."""
        db = tmp_path / "retry.db"
        python("import runlog\nrunlog.init(role='first')\nwith runlog.span('early'): pass", db)
        receiver.answers = [401]
        follower = follow(db, receiver)
        try:
            assert receiver.wait_for(lambda s: len(s) == 2, 30)
        finally:
            follower.send_signal(signal.SIGINT)
            _, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err
        assert [r["status"] for r in receiver.requests[:2]] == [401, 200]
        assert err.count("will retry") == 1 and "refused" in err
        assert len({s["span_id"] for s in receiver.spans}) == len(receiver.spans) == 2

    def test_a_killed_run_is_shipped_once_found_lost(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """--follow holds a running process span back, and ships it (ERROR, lost) once the
        process is gone without process.exited."""
        db = tmp_path / "lost.db"
        worker = spawn(
            """
            import sys, runlog
            runlog.init(role="doomed")
            with runlog.span("done-early"):
                pass
            runlog.flush()
            print("ready", flush=True)
            sys.stdin.readline()
            """,
            db,
        )
        assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
        follower = follow(db, receiver)
        try:
            assert receiver.wait_for(lambda s: any(x["name"] == "done-early" for x in s), 30)
            assert not any(x["name"] == "process doomed" for x in receiver.spans)
            worker.kill()
            worker.wait()
            assert receiver.wait_for(lambda s: any(x["name"] == "process doomed" for x in s), 30)
        finally:
            follower.send_signal(signal.SIGINT)
            _, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err
        (doomed,) = by_name(receiver.spans, "process doomed")
        assert (doomed["status"], doomed["attributes"]["runlog.run.state"]) == ("ERROR", "lost")
        assert len(receiver.spans) == 2


class TestTraceparent:
    OTEL_CHILD = """
        import os
        from opentelemetry import trace
        from opentelemetry.propagators._envcarrier import EnvironmentGetter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        ctx = TraceContextTextMapPropagator().extract(os.environ, getter=EnvironmentGetter())
        with provider.get_tracer("plain").start_as_current_span("otel work", context=ctx):
            pass
        (span,) = exporter.get_finished_spans()
        print(f"{span.context.trace_id:032x} {span.parent.span_id:016x}")
    """

    def test_plain_opentelemetry_child_joins_the_trace(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """A child using only opentelemetry-sdk, started in a runlog span, gets that span
        as parent and the trace the export gives it."""
        db = tmp_path / "otel.db"
        child = script(self.OTEL_CHILD)
        proc = python(
            f"""
            import subprocess, sys, runlog
            runlog.init(role="supervisor")
            with runlog.span("launch"):
                out = subprocess.run([sys.executable, {child!r}], capture_output=True,
                                     text=True, check=True).stdout
            print(out, end="")
            """,
            db,
        )
        trace_id, parent = proc.stdout.split()
        spans = shipped(db, receiver)
        (launch,) = by_name(spans, "launch")
        assert (launch["trace_id"], launch["span_id"]) == (trace_id, parent)

    def test_exec_inside_a_span_is_a_child_of_that_span(self, tmp_path: Path) -> None:
        """os.execv from inside a span: the new program's run records the span."""
        db = tmp_path / "exec.db"
        python(
            """
            import os, sys, runlog
            runlog.init(role="before")
            with runlog.span("replacing"):
                runlog.flush()
                os.execv(sys.executable, [sys.executable, "-c",
                         "import runlog; runlog.init(role='after')"])
            """,
            db,
        )
        before, after = rows(db, "SELECT * FROM events WHERE event_type = 'process.started'")
        (opened,) = rows(db, "SELECT * FROM events WHERE event_type = 'replacing.started'")
        assert after["parent_run_id"] == before["run_id"]
        assert after["payload"]["parent_span_id"] == opened["payload"]["span_id"]

    def test_child_env_carries_the_current_span(self, tmp_path: Path) -> None:
        """runlog.child_env(): TRACEPARENT and PARENT_SPAN_ID of the current span."""
        runlog.init(role="supervisor", db=str(tmp_path / "env.db"))
        outside = runlog.child_env()
        assert "PARENT_SPAN_ID" not in outside
        assert outside["TRACEPARENT"] == os.environ["TRACEPARENT"]
        with runlog.span("s") as s:
            inside = runlog.child_env({"PARENT_SPAN_ID": "99"})
        assert inside["PARENT_SPAN_ID"] == str(s.span_id)
        trace, parent = _propagation.parse_traceparent(inside["TRACEPARENT"]) or (0, 0)
        run_id = runlog.current_run_id()
        assert parent == _propagation.span_id(trace, run_id, s.span_id)

    def test_root_adopts_a_given_traceparent(self, tmp_path: Path, receiver: Receiver) -> None:
        """A root started with TRACEPARENT exports inside that trace, children included."""
        db = tmp_path / "adopt.db"
        outer = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        python(
            """
            import subprocess, sys, runlog
            runlog.init(role="supervisor")
            with runlog.span("step"):
                subprocess.run([sys.executable, "-c", "import runlog; runlog.log_event('x')"],
                               check=True)
            """,
            db,
            TRACEPARENT=outer,
        )
        spans = shipped(db, receiver)
        assert {s["trace_id"] for s in spans} == {"0af7651916cd43dd8448eb211c80319c"}
        (root,) = by_name(spans, "process supervisor")
        assert root["parent_span_id"] == "b7ad6b7169203331"
        (step,) = by_name(spans, "step")
        (child,) = by_name(spans, "process process")
        assert child["parent_span_id"] == step["span_id"]

    def test_malformed_traceparent_is_ignored_with_one_warning(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """A bad TRACEPARENT: one warning, and the run is a root of a trace of its own."""
        db = tmp_path / "bad.db"
        proc = python(
            "import runlog\nrunlog.init(role='r')\nrunlog.log_event('a')\nrunlog.log_event('b')",
            db,
            TRACEPARENT="00-not-a-trace",
        )
        assert proc.stderr.count("TRACEPARENT") == 1 and "malformed" in proc.stderr
        (started,) = rows(db, "SELECT * FROM events WHERE event_type = 'process.started'")
        assert "traceparent" not in started["payload"]
        (span,) = shipped(db, receiver)
        assert span["parent_span_id"] is None
        expected = _propagation.root_trace_id(started["run_id"], started["timestamp"])
        assert span["trace_id"] == f"{expected:032x}"


class TestLogEvent:
    def test_records_the_current_span(self, tmp_path: Path) -> None:
        """Inside a span log_event adds span_id (a payload's own span_id is kept)."""
        db = tmp_path / "log.db"
        runlog.init(role="r", db=str(db), sync=True)
        runlog.log_event("before", {"a": 1})
        with runlog.span("s") as s:
            runlog.log_event("inside", {"a": 2})
            runlog.log_event("empty")
            runlog.log_event("own", {"span_id": "mine"})
        got = {r["event_type"]: r["payload"] for r in rows(db)}
        assert got["before"] == {"a": 1}
        assert got["inside"] == {"a": 2, "span_id": s.span_id}
        assert got["empty"] == {"span_id": s.span_id}
        assert got["own"] == {"span_id": "mine"}


class TestExampleSystem:
    def test_one_trace_with_the_process_tree_and_every_llm_call(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """The example system: exactly one trace, every worker under the span that
        started it, every LLM call a GenAI CLIENT span with the table's tokens."""
        db = tmp_path / "runlog.db"
        run_example("supervisor.py", tmp_path, str(db), *SUPERVISOR_ARGS)
        spans = shipped(db, receiver)
        assert len({s["trace_id"] for s in spans}) == 1
        started = rows(db, "SELECT * FROM events WHERE event_type = 'process.started'")
        processes = {
            s["resource"]["runlog.run_id"]: s for s in spans if s["name"].startswith("process ")
        }
        assert set(processes) == {r["run_id"] for r in started}
        assert len(spans) == len(started) + len(table_spans(db))
        by_id = {s["span_id"]: s for s in spans}
        workers = [s for s in processes.values() if s["name"] == "process worker"]
        assert len(workers) == WORKERS + 1
        for worker in workers:
            parent = by_id[worker["parent_span_id"]]
            assert parent["resource"]["runlog.role"] == "supervisor"
            assert parent["name"] == "batch"
        assert sum(w["status"] == "ERROR" for w in workers) == 1
        table = rows(db, "SELECT * FROM events WHERE event_type LIKE 'llm_call.%'")
        llm = [s for s in spans if s["kind"] == "CLIENT"]
        assert len(llm) == len(table) == 2 * TASKS + 1
        assert all(s["attributes"]["gen_ai.operation.name"] == "chat" for s in llm)
        for key in ("input_tokens", "output_tokens"):
            assert sum(s["attributes"][f"gen_ai.usage.{key}"] for s in llm) == sum(
                r["payload"][key] for r in table
            )
        completed = [r["payload"] for r in table if r["event_type"] == "llm_call.completed"]
        exported_cost = sum(s["attributes"].get("gen_ai.usage.cost", 0.0) for s in llm)
        assert exported_cost == pytest.approx(sum(p["cost_usd"] for p in completed), abs=1e-12)
        assert exported_cost > 0
        assert all(s["attributes"].get("operation.cost") == s["attributes"].get("gen_ai.usage.cost")
                   for s in llm)  # fmt: skip


class TestPostgres:
    def test_exports_a_postgresql_table_like_sqlite(
        self, pg_url: str, tmp_path: Path, receiver: Receiver
    ) -> None:
        """The same process tree on PostgreSQL: one trace, every parent link, the same shape."""
        python(TREE, None, RUNLOG_DB=pg_url)
        spans = shipped(pg_url, receiver)
        assert len({s["trace_id"] for s in spans}) == 1
        ids = {s["span_id"] for s in spans}
        assert sum(s["parent_span_id"] is None for s in spans) == 1
        assert all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"])
        (spawning,) = by_name(spans, "spawning")
        children = [s for s in spans if s["parent_span_id"] == spawning["span_id"]]
        assert sum(s["name"].startswith("process ") for s in children) == 8


class TestCapture:
    def test_capture_gives_the_trace_context_back(self, tmp_path: Path) -> None:
        """A capture() block runs a run of its own; afterwards children are the outer run's."""
        from runlog.testing import capture

        runlog.init(role="outer", db=str(tmp_path / "outer.db"))
        before = runlog.child_env()
        with capture():
            assert runlog.child_env()["TRACEPARENT"] != before["TRACEPARENT"]
        assert runlog.child_env() == before
        assert os.environ["TRACEPARENT"] == before["TRACEPARENT"]


class TestLight:
    def test_runs_spans_and_children_import_no_opentelemetry(self, tmp_path: Path) -> None:
        """A run, a span and a child started in it import no OpenTelemetry (nor its HTTP
        stack): the bridge is an export, never on the application's path."""
        out = python(
            """
            import json, subprocess, sys, runlog
            with runlog.span("s"):
                runlog.log_event("y")
                subprocess.run([sys.executable, "-c", "pass"], check=True)
            heavy = ("opentelemetry", "requests", "google.protobuf", "urllib3")
            print(json.dumps([m for m in heavy if m in sys.modules]))
            """,
            tmp_path / "light.db",
        ).stdout
        assert json.loads(out) == []
