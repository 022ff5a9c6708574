"""`viscoin serve`: the explorer's API through a real server (shipped digits model, ephemeral port, a thread),
hostile requests, and the command's own errors."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from PIL import Image

from viscoin_cli.shipped import DEFAULT_MODEL

VISCOIN = Path(sys.executable).parent / "viscoin"
pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="the shipped digits model is missing")


def start_explorer(top_k: int = 4):
    """The explorer of the shipped digits model on 127.0.0.1, an ephemeral port, served from a thread."""
    from viscoin_cli.cli import _interpret as common
    from viscoin_cli.runtime import setup_runtime
    from viscoin_cli.serve.explorer import Explorer
    from viscoin_cli.serve.server import make_server

    facts = common.read_model(DEFAULT_MODEL)
    rt = setup_runtime(device="cpu", precision="fp32")
    model = common.load_model(facts, rt, common.Inputs())
    test_set = common.load_test_split(facts, common.Inputs())
    explorer = Explorer(
        model,
        rt,
        facts.class_names,
        test_set,
        top_k,
        resolution=facts.resolution,
        model_name=facts.path.name,
        dataset_name=facts.dataset["name"],
    )
    server = make_server(explorer, "127.0.0.1", 0, log_errors=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def server():
    server, thread = start_explorer()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def call(server, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
    """(status, JSON document, response headers) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        document = json.loads(raw) if kind.startswith("application/json") else raw
        return response.status, document, dict(response.getheaders())
    finally:
        connection.close()


def png_bytes(data_url: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return base64.b64decode(data_url[len(prefix) :])


@pytest.fixture(scope="module")
def sample(server):
    status, doc, _ = call(server, "GET", "/api/sample?index=7")
    assert status == 200, doc
    return doc


def assert_still_serving(server, sample) -> None:
    top = str(sample["concepts"][0]["concept"])
    status, doc, _ = call(server, "POST", "/api/render", {"source": sample["source"], "lambdas": {top: 0.5}})
    assert status == 200, doc
    assert doc["image"].startswith("data:image/png;base64,")


# --- the API --------------------------------------------------------------------------------------------------


def test_info_describes_the_model(server):
    status, info, _ = call(server, "GET", "/api/info")
    assert status == 200
    assert info["classes"] == [str(i) for i in range(10)]
    assert info["num_concepts"] == 64 and info["top_k"] == 4 and info["resolution"] == 32
    assert info["test_size"] == 360
    assert info["lambda"] == {"min": 0.0, "max": 4.0, "step": 0.1, "default": 1.0}


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/", "text/html"), ("/index.html", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")],
)
def test_page_assets_come_from_the_package_without_external_urls(server, path, kind):
    status, body, headers = call(server, "GET", path)
    assert status == 200 and headers["Content-Type"].startswith(kind)
    text = body.decode("utf-8")
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    if kind == "text/html":
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert 'src="app.js"' in text and 'href="style.css"' in text


def test_sample_is_explained(sample):
    assert sample["source"] == "test-7" and sample["caption"].startswith("test image 7")
    assert sample["label_name"] == str(sample["label"])
    assert len(sample["concepts"]) == 4
    relevances = [c["relevance"] for c in sample["concepts"]]
    assert relevances == sorted(relevances, reverse=True) and relevances[0] == pytest.approx(1.0)
    for concept in sample["concepts"]:
        for key in ("map", "gradient"):
            picture = Image.open(io.BytesIO(png_bytes(concept[key])))
            assert picture.size == (32, 32) and picture.mode == "RGB"
    for predictor in ("g", "f"):
        probabilities = [p["probability"] for p in sample[predictor]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert sample["render"]["lambdas"] == {}
    assert Image.open(io.BytesIO(png_bytes(sample["image"]))).size == (32, 32)


def test_a_slider_state_renders_and_repredicts(server, sample):
    top = str(sample["concepts"][0]["concept"])
    status, same, _ = call(server, "POST", "/api/render", {"source": "test-7", "lambdas": {top: 1}})
    assert status == 200
    assert same["image"] == sample["render"]["image"]  # every λ = 1 is the plain reconstruction
    status, removed, _ = call(server, "POST", "/api/render", {"source": "test-7", "lambdas": {top: 0}})
    assert status == 200 and removed["lambdas"] == {top: 0.0}
    assert png_bytes(removed["image"]) != png_bytes(same["image"])
    assert removed["g"] != same["g"]  # g reads the edited render
    status, doubled, _ = call(server, "POST", "/api/render", {"source": "test-7", "lambdas": {top: 4, "0": 2.5}})
    assert status == 200 and png_bytes(doubled["image"]) not in (png_bytes(same["image"]), png_bytes(removed["image"]))


def test_an_upload_is_explained_and_rendered_by_its_id(server, sample):
    picture = Image.open(io.BytesIO(png_bytes(sample["image"]))).resize((48, 64))  # not square: centre-cropped
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG")
    status, doc, _ = call(server, "POST", "/api/upload", buffer.getvalue(), {"Content-Type": "image/jpeg"})
    assert status == 200, doc
    assert doc["source"].startswith("upload-") and doc["caption"] == "upload, JPEG 48×64"
    assert "label" not in doc and len(doc["concepts"]) == 4
    top = str(doc["concepts"][0]["concept"])
    status, render, _ = call(server, "POST", "/api/render", {"source": doc["source"], "lambdas": {top: 0}})
    assert status == 200 and render["source"] == doc["source"]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16", "CMYK", "P", "1"])
def test_uploads_of_any_image_mode_are_explained(server, mode):
    picture = Image.new("RGB", (40, 40), (30, 200, 90)).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="TIFF" if mode == "CMYK" else "PNG")
    status, doc, _ = call(server, "POST", "/api/upload", buffer.getvalue())
    assert status == 200, doc
    assert Image.open(io.BytesIO(png_bytes(doc["image"]))).mode == "RGB"


def test_concurrent_renders_all_succeed(server, sample):
    top = str(sample["concepts"][0]["concept"])
    results: list[int] = []

    def render(lam: float) -> None:
        status, _, _ = call(server, "POST", "/api/render", {"source": "test-7", "lambdas": {top: lam}})
        results.append(status)

    threads = [threading.Thread(target=render, args=(i / 4,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200] * 8


# --- hostile requests ---------------------------------------------------------------------------------------


def _huge_png() -> bytes:
    """A 48 Mpx bilevel PNG of a few KB: a decompression bomb for a 32 px model."""
    buffer = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buffer, format="PNG")
    return buffer.getvalue()


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()[:80]


RENDER = "/api/render"
HOSTILE = [
    # (method, path, body, headers, status, part of the message)
    ("POST", RENDER, {"source": "test-7", "lambdas": {"9999": 1}}, None, 404, "no concept 9999"),
    ("POST", RENDER, {"source": "test-7", "lambdas": {"-3": 1}}, None, 400, "not a concept number"),
    ("POST", RENDER, {"source": "test-7", "lambdas": {"abc": 1}}, None, 400, "not a concept number"),
    ("POST", RENDER, b'{"source": "test-7", "lambdas": {"1": NaN}}', None, 400, "must be finite"),
    ("POST", RENDER, b'{"source": "test-7", "lambdas": {"1": Infinity}}', None, 400, "must be finite"),
    ("POST", RENDER, b'{"source": "test-7", "lambdas": {"1": -Infinity}}', None, 400, "must be finite"),
    ("POST", RENDER, {"source": "test-7", "lambdas": {"1": 99}}, None, 400, "outside [0, 4]"),
    ("POST", RENDER, {"source": "test-7", "lambdas": {"1": -0.5}}, None, 400, "outside [0, 4]"),
    ("POST", RENDER, {"source": "test-7", "lambdas": {"1": "2"}}, None, 400, "must be a number"),
    ("POST", RENDER, {"source": "test-7", "lambdas": {"1": True}}, None, 400, "must be a number"),
    ("POST", RENDER, {"source": "test-7", "lambdas": [1, 2]}, None, 400, "expected an object"),
    ("POST", RENDER, {"source": "../../etc/passwd", "lambdas": {}}, None, 400, "a path is not a source"),
    ("POST", RENDER, {"source": "/etc/passwd", "lambdas": {}}, None, 400, "a path is not a source"),
    ("POST", RENDER, {"source": "C:\\Windows\\win.ini"}, None, 400, "a path is not a source"),
    ("POST", RENDER, {"source": "test-99999", "lambdas": {}}, None, 404, "out of range"),
    ("POST", RENDER, {"source": "upload-0123456789abcdef"}, None, 404, "no upload"),
    ("POST", RENDER, {"source": 7}, None, 400, "expected the id string"),
    ("POST", RENDER, {"source": "test-7", "extra": 1}, None, 400, "unknown field"),
    ("POST", RENDER, b'{"source": ', None, 400, "malformed JSON"),
    ("POST", RENDER, b"\xff\xfe\x00", None, 400, "malformed JSON"),
    ("POST", RENDER, b"[1, 2]", None, 400, "expected a JSON object"),
    ("POST", RENDER, b"x" * (100 * 2**10), None, 413, "request body too large"),
    ("POST", RENDER + "?source=/etc/passwd", {"source": "test-7"}, None, 400, "unknown parameter"),
    ("GET", "/api/sample?index=../../etc/passwd", None, None, 400, "a path is not an index"),
    ("GET", "/api/sample?index=%2Fetc%2Fpasswd", None, None, 400, "a path is not an index"),
    ("GET", "/api/sample?index=-1", None, None, 400, "not a non-negative integer"),
    ("GET", "/api/sample?index=1e3", None, None, 400, "not a non-negative integer"),
    ("GET", "/api/sample?index=100000", None, None, 404, "out of range"),
    ("GET", "/api/sample?index=1&index=2", None, None, 400, "more than once"),
    ("GET", "/api/sample?path=/etc/passwd", None, None, 400, "unknown parameter"),
    ("GET", "/api/sample", None, None, 400, "index: missing"),
    ("GET", "/api/nope", None, None, 404, "no such route"),
    ("GET", "/static/../../../etc/passwd", None, None, 404, "no such route"),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", None, None, 404, "no such route"),
    ("GET", "/app.js/../../pyproject.toml", None, None, 404, "no such route"),
    ("GET", RENDER, None, None, 405, "only POST"),
    ("DELETE", "/", None, None, 405, "only GET"),
    ("PUT", "/api/upload", b"x", None, 405, "only POST"),
    ("GET", "/api/info", None, {"Host": "attacker.example:8765"}, 421, "only to localhost"),
    ("POST", "/api/upload", b"definitely not an image", None, 415, "not an image"),
    ("POST", "/api/upload", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", None, 415, "not an image"),
    ("POST", "/api/upload", b"", None, 400, "empty upload"),
    ("POST", "/api/upload", _truncated_png(), None, 400, "cannot be decoded"),
    ("POST", "/api/upload", _huge_png(), None, 413, "image too large"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"), HOSTILE, ids=[f"{h[0]} {h[-1]}" for h in HOSTILE]
)
def test_hostile_request_gets_a_4xx_json_error_and_the_server_keeps_serving(
    server, sample, method, path, body, headers, status, message
):
    got, doc, response_headers = call(server, method, path, body, headers)
    assert got == status, doc
    assert response_headers["Content-Type"].startswith("application/json")
    assert set(doc) == {"error"} and message in doc["error"] and "\n" not in doc["error"]
    assert_still_serving(server, sample)


def _raw_exchange(server, data: bytes, *, then: bytes = b"") -> tuple[bytes, float]:
    """Send `data` on a raw socket (and `then` after it), read one answer: (answer, seconds)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=20) as sock:
        sock.sendall(data)
        if then:
            with contextlib.suppress(OSError):  # the server may close first: it answered without reading it all
                sock.sendall(then)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - start


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_a_50_mb_upload_is_refused_from_its_content_length_before_it_is_read(server, sample):
    size = 50 * 2**20
    head = f"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: {size}\r\n\r\n"
    # the headers and the first 256 KB of an honest 50 MB body; the server answers without waiting for the rest
    answer, seconds = _raw_exchange(server, head.encode(), then=b"\x89PNG" + b"\0" * (2**18))
    status, error = _status_and_error(answer)
    assert status == 413 and "upload too large: 52428800 bytes, the limit is 8 MB" in error
    assert b"Connection: close" in answer and seconds < 10
    assert_still_serving(server, sample)


def test_a_large_upload_with_expect_100_continue_is_refused_before_the_body(server, sample):
    head = "POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 52428800\r\nExpect: 100-continue\r\n\r\n"
    answer, _ = _raw_exchange(server, head.encode())
    assert _status_and_error(answer)[0] == 413 and b"100 Continue" not in answer
    assert_still_serving(server, sample)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /a b HTTP/1.1\r\n\r\n", 400),
        (b"BREW /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
        (b"GET /api/info HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"POST /api/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /api/upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST /api/render HTTP/1.1\r\nHost: localhost\r\n\r\n", 411),
    ],
)
def test_malformed_http_gets_a_json_error(server, sample, request_bytes, status):
    answer, _ = _raw_exchange(server, request_bytes)
    got, error = _status_and_error(answer)
    assert got == status and error
    assert_still_serving(server, sample)


def test_keep_alive_serves_several_renders_on_one_connection(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    try:
        for lam in (0.0, 1.5, 3.0):
            body = json.dumps({"source": "test-7", "lambdas": {"0": lam}})
            connection.request("POST", RENDER, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["lambdas"] == {"0": lam}
    finally:
        connection.close()


def test_loopback_names():
    from viscoin_cli.serve.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.4", "example.com", "localhost.evil.com"))


# --- the command ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "-1"], "--port -1: expected 0..65535"),
        (["--port", "70000"], "--port 70000: expected 0..65535"),
        (["--top-k", "0"], "--top-k 0: must be at least 1"),
        (["--host", "bad host"], "expected an address or a host name"),
        (["--host", "192.0.2.1"], "cannot listen"),  # TEST-NET: an address of no interface here
        (["--model", "no-such-model.safetensors"], "no-such-model.safetensors"),
    ],
)
def test_bad_options_are_one_line_errors(args, message):
    assert message in assert_one_line_error(run_cli("serve", "--device", "cpu", *args))


def test_a_busy_port_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = assert_one_line_error(run_cli("serve", "--device", "cpu", "--port", port))
    assert f"--port {port}: already in use" in line


def test_a_host_other_than_loopback_is_warned_about(monkeypatch):
    from types import SimpleNamespace

    from viscoin_cli.cli import serve as command
    from viscoin_cli.serve.server import ExplorerServer

    monkeypatch.setattr(command, "_explorer", lambda *_: SimpleNamespace(top_k=6))  # no model: this is the CLI
    monkeypatch.setattr(ExplorerServer, "serve_forever", lambda *_, **__: None)
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: listening on 0.0.0.0: anyone who can reach this machine")
    assert "http://127.0.0.1:" in result.stdout


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a job started with `&` by a script inherits


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "inherited"),
    [(signal.SIGINT, None), (signal.SIGINT, _ignore_sigint), (signal.SIGTERM, None)],
    ids=["ctrl-c", "ctrl-c-inherited-ignored", "sigterm"],
)
def test_the_command_prints_its_url_serves_and_stops_on_ctrl_c(stop, inherited):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [str(VISCOIN), "serve", "--port", "0", "--device", "cpu", "--top-k", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=inherited,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("VisCoIN explorer of viscoin.safetensors: http://127.0.0.1:"), process.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/info")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["top_k"] == 3
        connection.close()
    finally:
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
