"""``runlog ui`` through the ASGI test client, on databases written by real processes.

A supervisor starts three workers (one works, one fails and dies of it, one vanishes
without ``process.exited``); the supervisor's instance id, an event type and payloads
carry HTML and script, which every page must show as text.  The same scenario runs on
PostgreSQL.  The command itself is started as a real process serving real HTTP.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from runlog._cli._db import open_reader
from runlog._cli._runs import RunSummary
from runlog._store import Event
from runlog._ui import _charts, _waterfall
from runlog._ui._app import create_app

from support import child_env, python, spawn

HOSTILE = "<script>alert('x')</script>"
HOSTILE_TYPE = "evil<img src=x onerror=alert(1)>.logged"

SCENARIO = f'''
import subprocess, sys
import runlog

WORKER_OK = """
import runlog
runlog.init(role="worker", instance_id="worker-1", version="1.0")

@runlog.traced_event("task.claimed")
def claim():
    return 1

claim()
with runlog.span("task", task_id=7):
    with runlog.llm_call("gpt-4o-mini") as call:
        call.record(input_tokens=100, output_tokens=20)
    with runlog.llm_call("gpt-4o", stream=True) as call:
        call.first_token()
        call.record(input_tokens=50, output_tokens=10)
runlog.log_event("note.logged", {{"note": {HOSTILE!r}, "task_id": 7}})
"""
WORKER_FAIL = """
import runlog
runlog.init(role="worker", instance_id="worker-2", version="1.0")
with runlog.span("task", task_id=8):
    with runlog.llm_call("gpt-4o"):
        raise RuntimeError("rate limited <b>hard</b>")
"""
WORKER_LOST = """
import os, runlog
runlog.init(role="worker", instance_id="worker-3", version="1.0", sync=True)
runlog.log_event("task.claimed", {{"task_id": 7, "attempt": 2}})
runlog.log_event({HOSTILE_TYPE!r}, {{"x": 1}})
os._exit(0)
"""
runlog.init(role="supervisor", instance_id={HOSTILE!r}, version="1.0")
runlog.log_event("revision.promoted", {{"revision": "r1"}})
for code in (WORKER_OK, WORKER_FAIL, WORKER_LOST):
    runlog.flush()
    subprocess.run([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
'''


def client_for(db: str) -> TestClient:
    return TestClient(create_app(open_reader(db, "--db")))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database written once by the scenario's four processes."""
    db = tmp_path_factory.mktemp("ui") / "events.db"
    python(SCENARIO, db)
    return db


@pytest.fixture
def client(scenario: Path) -> Iterator[TestClient]:
    with client_for(str(scenario)) as c:
        yield c


def run_ids(client: TestClient) -> dict[str, int]:
    """Run ids by instance id, read off the runs page's rows."""
    html = client.get("/").text
    found = re.findall(r'data-run="(\d+)".*?<td>(worker-\d|&lt;script.*?)</td>', html, re.S)
    return {("sup" if name.startswith("&lt;") else name): int(rid) for rid, name in found}


def stream_rows(client: TestClient, url: str, **headers: str) -> tuple[list[int], list[str]]:
    """The ids and row HTML of one live-tail response (``seconds=0``: one poll)."""
    text = client.get(url, headers=headers).text
    ids: list[int] = []
    rows: list[str] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            for row in json.loads(line[6:])["rows"]:
                ids.append(row["id"])
                rows.append(row["html"])
    return ids, rows


class TestRunsPage:
    def test_trees_with_status_counts_and_state(self, client: TestClient) -> None:
        """The tree's runs with their status, counts and tokens; the derived state."""
        html = client.get("/").text
        runs = run_ids(client)
        assert set(runs) == {"sup", "worker-1", "worker-2", "worker-3"}
        assert "exited exception RuntimeError: rate limited &lt;b&gt;hard&lt;/b&gt;" in html
        for name in ("worker-2", "worker-3"):
            assert re.search(rf'class="failed\s*"\s+data-run="{runs[name]}"', html)
        assert '<span class="status bad">lost</span>' in html
        assert "150 / 30" in html  # worker-1's tokens in / out
        assert '<dd id="good-rev">r1</dd>' in html
        assert re.search(r'<td class="num">3</td><td>r1</td>', html)  # worker_instance_seq

    def test_filters_dim_what_does_not_match(self, client: TestClient) -> None:
        """status=lost keeps the tree, with only the lost worker undimmed."""
        html = client.get("/?status=lost").text
        rows = re.findall(r'<tr class="([^"]*)"\s+data-run="(\d+)"', html)
        lost = run_ids(client)["worker-3"]
        assert [cls.split() for cls, rid in rows if int(rid) == lost] == [["failed"]]
        assert all("dim" in cls for cls, rid in rows if int(rid) != lost)
        assert "No runs match" in client.get("/?role=nobody").text

    def test_time_range_and_role(self, client: TestClient) -> None:
        """Runs started in the range (local time) match; role narrows to one role."""
        assert "No runs match" in client.get("/?since=2999-01-01T00:00").text
        html = client.get("/?until=2999-01-01T00:00&role=supervisor").text
        rows = re.findall(r'<tr class="([^"]*)"\s+data-run="(\d+)"', html)
        sup = run_ids(client)["sup"]
        assert [int(rid) for cls, rid in rows if "dim" not in cls] == [sup]
        assert len(rows) == 4

    def test_bad_filters_are_400(self, client: TestClient) -> None:
        """An unknown status or an unreadable time is a 400 page saying why."""
        response = client.get("/?status=weird")
        assert response.status_code == 400 and "status is one of" in response.text
        assert client.get("/?since=yesterday").status_code == 400


class TestRunPage:
    def test_waterfall_and_events_of_the_whole_tree(self, client: TestClient) -> None:
        """The supervisor's page draws every process and lists every event of the tree."""
        runs = run_ids(client)
        html = client.get(f"/run/{runs['sup']}").text
        assert '<svg class="waterfall"' in html
        for name in ("worker-1", "worker-2", "worker-3"):
            assert f'href="/run/{runs[name]}"' in html
        assert 'class="bar llm' in html and 'class="bar span failed"' in html
        assert 'class="bar traced"' in html and 'class="ttft"' in html
        assert "note.logged" in html and "process.exited" in html

    def test_worker_page_links_up_to_its_parent(self, client: TestClient) -> None:
        """A worker's page has the supervisor in its breadcrumb and only its own events."""
        runs = run_ids(client)
        html = client.get(f"/run/{runs['worker-2']}").text
        assert f'<a href="/run/{runs["sup"]}">' in html
        assert "llm_call.failed" in html and "note.logged" not in html

    def test_unknown_run_is_404(self, client: TestClient) -> None:
        response = client.get("/run/99999")
        assert response.status_code == 404 and "no run 99999" in response.text


class TestLLMPage:
    def test_per_model_summary_histogram_and_calls(self, client: TestClient) -> None:
        """Both models summarised with a histogram; every call listed, the failed one red."""
        html = client.get("/llm").text
        assert "3 matching" in html
        assert html.count('<svg class="chart hist"') == 2
        assert '<svg class="chart tokens"' in html
        assert html.count('<tr class="failed"') == 1 and "RuntimeError" in html
        assert html.count('data-event="') == 3

    def test_filters_and_sorting(self, client: TestClient) -> None:
        """model= narrows the calls; sort=latency orders them; a bad sort is a 400."""
        html = client.get("/llm?model=gpt-4o").text
        assert "2 matching" in html and ">gpt-4o-mini<" not in html.split("<h2>Calls")[1]
        assert "1 matching" in client.get("/llm?status=failed").text
        assert client.get("/llm?sort=latency&order=asc").status_code == 200
        assert client.get("/llm?sort=nonsense").status_code == 400


class TestEvents:
    def test_tail_lists_newest_first_with_the_stream_url(self, client: TestClient) -> None:
        """The page lists the events newest first and says where to follow from."""
        html = client.get("/events").text
        ids = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]
        assert ids == sorted(ids, reverse=True) and len(ids) > 10
        assert f'data-stream="/events/stream?after={ids[0]}"' in html

    def test_older_events_page_back(self, db_path: Path) -> None:
        """Past the newest 200, "older" pages back by id, without the live tail."""
        code = "import runlog\nfor n in range(250): runlog.log_event('n.logged', {'n': n})"
        python(code, db_path)
        with client_for(str(db_path)) as c:
            html = c.get("/events").text
            ids = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]
            assert len(ids) == 200 and f'href="?before={ids[-1]}"' in html
            older = c.get(f"/events?before={ids[-1]}").text
            rest = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', older)]
            assert rest == list(range(ids[-1] - 1, 0, -1)) and "data-stream" not in older

    def test_payload_field_follows_a_task_across_runs(self, client: TestClient) -> None:
        """field=task_id=7 finds the task's events in worker-1 and in worker-3."""
        html = client.get("/events", params={"field": "task_id=7"}).text
        runs = run_ids(client)
        assert f'href="/run/{runs["worker-1"]}"' in html
        assert f'href="/run/{runs["worker-3"]}"' in html
        assert "task_id=8" not in html
        assert client.get("/events", params={"field": "no-equals"}).status_code == 400

    def test_type_and_run_filters(self, client: TestClient) -> None:
        html = client.get("/events", params={"type": "llm_call.failed, note.logged"}).text
        assert len(re.findall(r"<tr data-id=", html)) == 2
        worker = run_ids(client)["worker-3"]
        html = client.get("/events", params={"run": worker}).text
        assert len(re.findall(r"<tr data-id=", html)) == 3

    def test_stream_sends_rows_after_the_mark_and_resumes(self, client: TestClient) -> None:
        """The stream sends what is above ``after``; Last-Event-ID resumes past the mark."""
        ids, _ = stream_rows(client, "/events/stream?seconds=0&after=0")
        assert ids == sorted(ids) and ids[0] == 1
        again, _ = stream_rows(client, "/events/stream?seconds=0", **{"Last-Event-ID": "5"})
        assert again == [i for i in ids if i > 5]
        typed, _ = stream_rows(client, "/events/stream?seconds=0&type=note.logged")
        assert len(typed) == 1

    def test_event_page_and_fragment(self, client: TestClient) -> None:
        """An event's payload as pretty JSON, with links to follow its fields."""
        html = client.get("/events", params={"type": "note.logged"}).text
        (event_id,) = set(re.findall(r'data-event="(\d+)"', html))
        page = client.get(f"/event/{event_id}").text
        fragment = client.get(f"/event/{event_id}?fragment=1").text
        assert "<html" in page and "<html" not in fragment
        assert "&#34;task_id&#34;: 7" in fragment
        assert 'href="/events?field=task_id%3D7"' in fragment
        assert client.get("/event/123456").status_code == 404


class TestSafety:
    PAGES = ("/", "/llm", "/events", "/events?type=" + HOSTILE_TYPE)

    def test_hostile_text_is_escaped_everywhere(self, client: TestClient) -> None:
        """HTML and script from payloads, instance ids and event types arrive as text."""
        runs = run_ids(client)
        urls = [*self.PAGES, *(f"/run/{rid}" for rid in runs.values())]
        urls += [f"/event/{i}" for i in range(1, 40)]
        for url in urls:
            response = client.get(url)
            if response.status_code == 404:
                continue
            assert "<script>alert" not in response.text, url
            assert "<img src=x" not in response.text, url
            assert "<b>hard" not in response.text, url
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in client.get("/").text
        assert "evil&lt;img src=x onerror=alert(1)&gt;.logged" in client.get("/events").text
        _, rows = stream_rows(client, "/events/stream?seconds=0&after=0")
        assert not any("<script>" in row or "<img" in row for row in rows)
        assert any("&lt;img src=x" in row for row in rows)

    def test_every_response_forbids_foreign_scripts_and_requests(self, client: TestClient) -> None:
        """A Content Security Policy on every response: only this server's own assets."""
        for url in ("/", "/static/ui.js", "/events/stream?seconds=0", "/run/99999"):
            policy = client.get(url).headers["content-security-policy"]
            assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "text/css" in client.get("/static/ui.css").headers["content-type"]

    def test_other_host_headers_are_refused(self, scenario: Path) -> None:
        """With allowed hosts (as the command sets them), a rebinding Host gets 400."""
        app = create_app(open_reader(str(scenario), "--db"), allowed_hosts=["127.0.0.1"])
        with TestClient(app, base_url="http://127.0.0.1") as local:
            assert local.get("/").status_code == 200
            assert local.get("/", headers={"host": "evil.example"}).status_code == 400


class TestOtherDatabases:
    ROUTES = ("/", "/llm", "/events", "/events?field=task_id=7", "/events/stream?seconds=0")

    def test_empty_database(self, db_path: Path) -> None:
        """A runlog database with no events renders every page, saying there is nothing."""
        python(f"import runlog._store as s; s.open_store({str(db_path)!r}).create()")
        with client_for(str(db_path)) as c:
            for url in self.ROUTES:
                assert c.get(url).status_code == 200, url
            assert "No runs yet" in c.get("/").text
            assert "No LLM calls yet" in c.get("/llm").text
            assert c.get("/run/1").status_code == 404

    def test_database_being_written(self, db_path: Path) -> None:
        """While a process writes: it shows as running, and the stream brings its new rows."""
        code = """
        import sys, runlog
        runlog.init(role="worker", instance_id="busy", sync=True)
        for line in sys.stdin:
            runlog.log_event("step.logged", {"n": int(line)})
            print("ok", flush=True)
        """
        child = spawn(code, db_path)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("1\n")
        child.stdin.flush()
        assert child.stdout.readline() == "ok\n"
        with client_for(str(db_path)) as c:
            assert '<span class="status live">running</span>' in c.get("/").text
            mark = int(re.findall(r"after=(\d+)", c.get("/events").text)[0])
            child.stdin.write("2\n")
            child.stdin.flush()
            assert child.stdout.readline() == "ok\n"
            ids, rows = stream_rows(c, f"/events/stream?seconds=0&after={mark}")
            assert len(ids) == 1 and "n=2" in rows[0]
            assert c.get("/run/1").status_code == 200

    def test_postgresql(self, pg_url: str) -> None:
        """The same pages over PostgreSQL, written by the same processes."""
        python(SCENARIO, None, RUNLOG_DB=pg_url)
        with client_for(pg_url) as c:
            runs = run_ids(c)
            assert set(runs) == {"sup", "worker-1", "worker-2", "worker-3"}
            assert '<dd id="good-rev">r1</dd>' in c.get("/").text
            assert 'class="bar llm' in c.get(f"/run/{runs['sup']}").text
            assert "3 matching" in c.get("/llm").text
            html = c.get("/events", params={"field": "task_id=7"}).text
            assert f'href="/run/{runs["worker-3"]}"' in html
            ids, _ = stream_rows(c, "/events/stream?seconds=0&after=0")
            assert len(ids) > 10
            assert "<script>alert" not in c.get("/").text


def summary(run_id: int, started: int, ms: float) -> RunSummary:
    return RunSummary(
        run_id, None, "worker", "w", 1, "h", None, started, "exited",
        {"reason": "exception", "exit_code": 1}, ms, 0, 0, 0, 0, 0, 0, 0,
    )  # fmt: skip


def event(i: int, t_ms: float, kind: str, **payload: object) -> Event:
    return Event(i, int(t_ms * 1e6), 1, None, kind, dict(payload))


class TestLayout:
    def test_bars_lanes_and_an_unfinished_span(self) -> None:
        """Timed events are bars ending at their timestamp, one lane under their parent;
        a span that never ended runs to the process's end, red."""
        events = [
            event(1, 0, "process.started"),
            event(2, 10, "task.started", span_id=1, parent_span_id=None),
            event(3, 60, "llm_call.completed", span_id=2, parent_span_id=1, latency_ms=40,
                  time_to_first_token_ms=10, model_name="m"),
            event(4, 70, "task.completed", span_id=1, duration_ms=60),
            event(5, 80, "task.started", span_id=3, parent_span_id=None),
            event(6, 100, "process.exited"),
        ]  # fmt: skip
        w = _waterfall.build([(summary(1, 0, 100.0), 0)], {1: events})
        kinds = [(i.kind, i.failed) for i in w.items]
        assert kinds == [
            ("process", True),
            ("tick", False),
            ("llm", False),
            ("span", False),
            ("unfinished", True),
            ("tick", False),
        ]
        process, _, llm, span, open_span, _ = w.items
        assert process.w == pytest.approx(_waterfall.PLOT_W)
        assert llm.y == span.y + _waterfall.ROW_H and span.y == process.y + _waterfall.ROW_H
        assert llm.x == pytest.approx(_waterfall.LABEL_W + 0.2 * _waterfall.PLOT_W)
        assert llm.ttft_x == pytest.approx(_waterfall.LABEL_W + 0.3 * _waterfall.PLOT_W)
        assert open_span.x + open_span.w == pytest.approx(_waterfall.LABEL_W + _waterfall.PLOT_W)
        assert w.blocks[0].height == 3 * _waterfall.ROW_H

    def test_a_crowded_waterfall_leaves_out_what_cannot_be_told_apart(self) -> None:
        """Thousands of sub-pixel calls in one lane: most are left out, counted; a failed
        one and the process bar stay."""
        events = [event(1, 0, "process.started")]
        for i in range(2, 3000):
            kind = "call.failed" if i == 1500 else "call.completed"
            events.append(event(i, i / 100, kind, span_id=i, duration_ms=0.001))
        w = _waterfall.build([(summary(1, 0, 30.0), 0)], {1: events})
        assert 0 < len(w.items) < 1100 and w.left_out == len(events) + 1 - len(w.items)
        assert [i.kind for i in w.items if i.failed and i.kind == "span"] == ["span"]
        assert w.items[0].kind == "process"

    def test_histogram_bins_cover_every_latency(self) -> None:
        """Every latency falls in a bin: wide ranges in 1-2-5 steps, narrow ones evenly."""
        for values in ([5.0, 50.0, 5000.0, 30000.0], [300.0, 310.0, 800.0], [1.0]):
            chart = _charts.histogram(values)
            counts = [int(b.title.rsplit(": ", 1)[1].split()[0]) for b in chart.bars]
            assert sum(counts) == len(values)


class TestCommand:
    def test_serves_until_ctrl_c_and_prints_its_url(self, scenario: Path) -> None:
        """``runlog ui --port 0 --no-browser`` prints its URL, serves it, stops on SIGINT."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "runlog", "ui", "--db", str(scenario), "--port", "0",
             "--no-browser"],
            env=child_env(None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.fullmatch(r"runlog ui: (http://127\.0\.0\.1:(\d+)/)\n", line)
            assert match, line
            with urllib.request.urlopen(match.group(1) + "llm", timeout=30) as response:
                assert response.status == 200 and b"gpt-4o-mini" in response.read()
            # An open live tail does not hold the shutdown up for its 25 s.
            with urllib.request.urlopen(match.group(1) + "events/stream", timeout=30) as tail:
                assert tail.readline() == b"retry: 1000\n"
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    def test_json_gives_the_url_to_a_script(self, scenario: Path) -> None:
        """With --json the one line printed is ``{"url": ...}``."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "runlog", "ui", "--db", str(scenario), "--port", "0",
             "--no-browser", "--json"],
            env=child_env(None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            url = json.loads(proc.stdout.readline())["url"]
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.status == 200
        finally:
            proc.terminate()
            proc.communicate(timeout=30)

    def test_a_port_in_use_is_a_clear_error(self, scenario: Path) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            proc = subprocess.run(
                [sys.executable, "-m", "runlog", "ui", "--db", str(scenario), "--port",
                 str(port), "--no-browser"],
                env=child_env(None),
                capture_output=True,
                text=True,
                timeout=60,
            )  # fmt: skip
        assert proc.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
