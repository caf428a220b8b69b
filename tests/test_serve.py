"""`charrnn serve`: the API through FastAPI's test client (every parameter, every bad value a
4xx with a message, hostile text escaped), the scheduler's bounds, and the real command in a
subprocess on a free port, ended by SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import train_run

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from charrnn.serve import app as server  # noqa: E402

TEXT = 'the cat sat on the mat. <b>"quoted"</b> & more;\nthe dog sat on the log.\n' * 80


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    corpus = folder / "c.txt"
    corpus.write_text(TEXT)
    train_run(corpus, folder / "cats", max_steps=40, batch_size=8, seq_len=32, lr=1e-2)
    return folder / "cats"


@pytest.fixture(scope="module")
def client(run):
    app = server.create_app(server.load_runs([run]), workers=2, capacity=8)
    with TestClient(app) as c:
        yield c


def test_the_runs_served_are_listed_by_name_with_what_they_are(client):
    runs = client.get("/api/runs").json()["runs"]
    assert [r["name"] for r in runs] == ["cats"]
    assert runs[0]["model"]["hidden_size"] == 32 and runs[0]["corpus"] == "c"


def test_a_sample_streams_as_sample_does_with_every_parameter(client, run):
    import charrnn

    loaded = charrnn.load(run)
    body = {"run": "cats", "prime": "the ", "length": 120, "temperature": 0.7, "top_k": 5,
            "top_p": 0.9, "seed": 3, "stop": "."}
    with client.stream("POST", "/api/sample", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        got = "".join(response.iter_text())
    assert got == loaded.sample(120, prime="the ", temperature=0.7, top_k=5, top_p=0.9,
                                seed=3, stop=".")
    beam = client.post("/api/sample", json={"run": "cats", "prime": "the ", "length": 60,
                                            "beam": 4}).text
    assert beam == loaded.sample(60, prime="the ", beam=4)
    adapted = client.post("/api/sample", json={"run": "cats", "prime": "the dog ", "length": 30,
                                               "seed": 1, "adapt": True})
    assert adapted.status_code == 200 and len(adapted.text) == 30
    mixed = client.post("/api/sample", json={"run": "cats", "prime": "the ", "length": 30,
                                             "seed": 1, "mix": True})
    assert mixed.status_code == 200 and mixed.text == loaded.sample(30, prime="the ", seed=1,
                                                                    mix=True)


@pytest.mark.parametrize("body, status, says", [
    ({"run": "dogs"}, 404, "no run 'dogs' is served here; the runs are cats"),
    ({"run": "../cats"}, 404, "no run"),
    ({"run": "cats", "length": 0}, 422, "length"),
    ({"run": "cats", "length": 10**6}, 422, "length"),
    ({"run": "cats", "temperature": -1}, 422, "temperature"),
    ({"run": "cats", "top_p": 0}, 422, "top_p"),
    ({"run": "cats", "top_k": 0}, 422, "top_k"),
    ({"run": "cats", "seed": -1}, 422, "seed"),
    ({"run": "cats", "beam": 100}, 422, "beam"),
    ({"run": "cats", "beam": 2, "top_k": 3}, 400, "beam finds the likeliest text"),
    ({"run": "cats", "stop": ""}, 422, "stop"),
    ({"run": "cats", "prime": "Z\u00a7"}, 400, "never saw"),
    ({"run": "cats", "adapt": True}, 400, "adapt learns from the prime"),
    ({"run": "cats", "path": "/etc/passwd"}, 422, "path"),
    ({"run": 5}, 422, "run"),
])
def test_a_bad_request_is_a_4xx_with_a_message_never_a_500(client, body, status, says):
    response = client.post("/api/sample", json=body)
    assert response.status_code == status, response.text
    assert says in json.dumps(response.json()["detail"])


def test_a_body_too_large_or_not_json_is_refused_in_words(client):
    response = client.post("/api/sample", content=b"x" * (server.MAX_BODY + 1),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "at most" in response.json()["detail"]
    response = client.post("/api/sample", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_the_page_completes_and_paints_with_escaped_text(client):
    done = client.post("/api/complete", json={"run": "cats", "text": "the cat ", "length": 20,
                                              "samples": 2})
    assert done.status_code == 200
    offers = done.json()
    assert isinstance(offers["beam"], str) and len(offers["samples"]) == 2
    hostile = '<b>"quoted"</b> & more;\n'
    painted = client.post("/api/inspect", json={"run": "cats", "text": hostile * 3,
                                                "probe": "quote"}).json()
    assert painted["text"] == hostile * 3 and len(painted["levels"]) == len(hostile * 3)
    assert painted["cells"] and all(0 <= v <= server.LEVELS - 1 for v in painted["levels"])
    one = client.post("/api/inspect", json={"run": "cats", "text": "the cat", "layer": 1,
                                            "cell": 3, "state": "h"}).json()
    assert (one["layer"], one["cell"], one["state"]) == (1, 3, "h")
    bad = client.post("/api/inspect", json={"run": "cats", "text": "the cat", "cell": 999})
    assert bad.status_code == 400 and "does not exist" in bad.json()["detail"]
    page = client.get("/").text  # the page puts text in with textContent, never innerHTML
    script = client.get("/page/page.js").text
    assert "<textarea" in page and "innerHTML" not in script and "textContent" in script
    assert client.get("/page/../app.py").status_code == 404
    assert client.get("/docs").status_code == 200


def test_a_full_server_answers_503_and_a_client_that_leaves_frees_its_slot(run, monkeypatch):
    """Beyond its capacity a request gets a 503 with one line; a job whose client left stops
    at its next slice, and its slot is free again within a second."""
    from charrnn.api import Run

    gate, real = threading.Event(), Run.characters

    def slow(self, length=1000, **kw):  # a generation that goes on until the gate opens
        def chars():
            while not gate.wait(0.01):
                yield "x"
            yield from real(self, length, **kw)
        return chars()

    app = server.create_app(server.load_runs([run]), workers=1, capacity=1)
    with TestClient(app) as c:
        monkeypatch.setattr(Run, "characters", slow)
        scheduler = app.state.scheduler
        with c.stream("POST", "/api/sample", json={"run": "cats", "length": 10}) as held:
            assert held.status_code == 200
            busy = c.post("/api/sample", json={"run": "cats", "length": 10})
            assert busy.status_code == 503 and "busy" in busy.json()["detail"]
            assert busy.headers["retry-after"] == "1"
            assert scheduler.jobs == 1
        left = time.monotonic()  # the held client is gone: its job stops, the gate still shut
        while scheduler.jobs and time.monotonic() - left < 5:
            time.sleep(0.01)
        assert scheduler.jobs == 0 and time.monotonic() - left < 1.0
        gate.set()
        monkeypatch.setattr(Run, "characters", real)
        assert c.post("/api/sample", json={"run": "cats", "length": 10}).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_command_serves_on_localhost_and_ends_cleanly_on_sigterm(run):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", str(run), "--port",
                             str(port)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=2) as r:
                    answer = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert answer is not None and answer["runs"][0]["name"] == "cats"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/sample", method="POST",
            data=json.dumps({"run": "cats", "length": 50, "seed": 1}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert len(r.read().decode()) == 50
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    said = proc.stderr.read()
    # uvicorn shuts down (its connections closed), then ends by the signal, as a shell sees
    # every charrnn command end that a signal stopped (143)
    assert proc.returncode == -signal.SIGTERM, said
    assert f"serving cats at http://127.0.0.1:{port}/" in said and "Traceback" not in said


def test_a_host_open_to_the_network_is_said_in_one_line(run, monkeypatch):
    import uvicorn
    from conftest import invoke

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    result = invoke("serve", run, "--host", "0.0.0.0")
    assert result.exit_code == 0
    assert "warning: listening on 0.0.0.0: the runs are reachable from the network" in \
        result.stderr
    local = invoke("serve", run)
    assert "warning" not in local.stderr and "serving cats at http://127.0.0.1:8000/" in \
        local.stderr
    bad = invoke("serve", run, "--port", "0", catch_exceptions=True)
    assert bad.exit_code == 1 and "--port must be from 1 to 65535" in bad.stderr


@pytest.mark.parametrize("text, status, says", [
    ("</script><script>alert(1)</script>", 400, "never saw"),
    ("\x1b]0;x\x07", 400, "never saw"),
    ("\udce9 lone", 422, "unicode"),  # (a lone surrogate is no text: the request is invalid)
])
def test_hostile_text_in_a_request_is_a_4xx_whose_message_is_valid_json(client, text, status,
                                                                        says):
    """Characters the model never saw (markup, escape sequences) or that are not text at all
    (a lone surrogate) in a prime or a text to inspect: a 4xx whose message is valid JSON,
    never a 500."""
    for path, body in (("/api/sample", {"run": "cats", "prime": text}),
                       ("/api/inspect", {"run": "cats", "text": text}),
                       ("/api/complete", {"run": "cats", "text": text})):
        response = client.post(path, content=json.dumps(body).encode(),
                               headers={"content-type": "application/json"})
        assert response.status_code == status, (path, response.text)
        assert response.content.isascii() and says in json.dumps(response.json())
