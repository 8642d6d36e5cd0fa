"""imbsam.data.fetch against a real HTTP server on 127.0.0.1, file:// URLs and plain paths."""

import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from imbsam.data.download import fetch
from imbsam.errors import InputError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class _ArchiveHandler(BaseHTTPRequestHandler):
    """Serves server.payload at any path ending in /archive.tar.gz, honouring Range unless told not to."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if not self.path.endswith("/archive.tar.gz"):
            self.send_error(404)
            return
        if server.failures_left:
            server.failures_left -= 1
            self.send_error(503)
            return
        if server.stall_seconds:
            time.sleep(server.stall_seconds)
        payload, start, status = server.payload, 0, 200
        requested = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if requested and not server.ignore_range:
            start, status = int(requested.group(1)), 206
            if start >= len(payload):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(payload)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = payload[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.end_headers()
        if server.cut_after is not None:
            # Announce the whole body, send part of it, hang up: a connection dropped mid-download.
            body, server.cut_after = body[: server.cut_after], None
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first, as in the timeout test

    def log_message(self, *args):
        """Keep the test output quiet."""


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch):
    """Loopback requests must not be sent to a proxy configured on the machine."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ArchiveHandler)
    httpd.daemon_threads = True
    httpd.payload, httpd.requests = PAYLOAD, []
    httpd.cut_after, httpd.ignore_range, httpd.failures_left, httpd.stall_seconds = None, False, 0, 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/archive.tar.gz"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/archive.tar.gz"


def test_http_download(server, tmp_path, capsys):
    dest = fetch(server.url, tmp_path / "data" / "a.tar.gz", PAYLOAD_MD5, backoff=0)
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["a.tar.gz"]
    assert server.requests == [("/archive.tar.gz", None)]
    assert "archive.tar.gz" in capsys.readouterr().err  # the progress bar goes to stderr


def test_cut_connection_resumes_with_range_in_the_same_call(server, tmp_path):
    server.cut_after = 100_000
    dest = fetch(server.url, tmp_path / "a.tar.gz", PAYLOAD_MD5, retries=2, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=100000-"]


def test_cut_connection_keeps_the_part_and_the_next_call_resumes(server, tmp_path):
    server.cut_after = 120_000
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(InputError, match="after 1 attempts .*closed after 120000 of 300000 bytes.*resumes") as error:
        fetch(server.url, dest, PAYLOAD_MD5, retries=0, progress=False)
    assert "data.url" in str(error.value) and "\n" not in str(error.value)
    assert not dest.exists() and (tmp_path / "a.tar.gz.part").stat().st_size == 120_000
    fetch(server.url, dest, PAYLOAD_MD5, retries=0, progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "a.tar.gz.part").exists()
    assert [r for _, r in server.requests] == [None, "bytes=120000-"]


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    server.ignore_range = True
    (tmp_path / "a.tar.gz.part").write_bytes(b"stale bytes from another file")
    fetch(server.url, tmp_path / "a.tar.gz", PAYLOAD_MD5, progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == ["bytes=29-"]


def test_range_not_satisfiable_means_the_part_is_complete(server, tmp_path):
    (tmp_path / "a.tar.gz.part").write_bytes(PAYLOAD)
    fetch(server.url, tmp_path / "a.tar.gz", PAYLOAD_MD5, progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [f"bytes={len(PAYLOAD)}-"]


def test_server_errors_are_retried(server, tmp_path):
    server.failures_left = 2
    fetch(server.url, tmp_path / "a.tar.gz", PAYLOAD_MD5, retries=2, backoff=0, progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == PAYLOAD and len(server.requests) == 3


def test_not_found_is_not_retried(server, tmp_path):
    with pytest.raises(InputError, match="HTTP 404.*check the URL.*local path or file:// URL"):
        fetch(server.url.replace("archive", "missing"), tmp_path / "a.tar.gz", PAYLOAD_MD5, retries=3, backoff=0)
    assert len(server.requests) == 1


def test_read_timeout(server, tmp_path):
    server.stall_seconds = 1
    with pytest.raises(InputError, match="timed out"):
        fetch(server.url, tmp_path / "a.tar.gz", PAYLOAD_MD5, timeout=0.2, retries=0, progress=False)


def test_unreachable_url_suggests_the_offline_route(tmp_path):
    url = _closed_port_url()
    with pytest.raises(InputError) as error:
        fetch(url, tmp_path / "a.tar.gz", PAYLOAD_MD5, timeout=2, retries=1, backoff=0)
    message = str(error.value)
    assert f"could not download {url} after 2 attempts" in message and "refused" in message
    assert "offline: download a.tar.gz elsewhere and set data.url to its local path or file:// URL" in message
    assert not (tmp_path / "a.tar.gz").exists() and not (tmp_path / "a.tar.gz.part").exists()


def test_proxy_from_the_environment_is_used(server, tmp_path, monkeypatch):
    """urllib's default ProxyHandler reads http_proxy; the loopback server plays the proxy."""
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.server_address[1]}")
    fetch("http://cifar.invalid/data/archive.tar.gz", tmp_path / "a.tar.gz", PAYLOAD_MD5, progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == PAYLOAD
    assert server.requests == [("http://cifar.invalid/data/archive.tar.gz", None)]


def test_wrong_md5_names_both_and_leaves_nothing(server, tmp_path):
    expected = "0" * 32
    with pytest.raises(InputError) as error:
        fetch(server.url, tmp_path / "a.tar.gz", expected, progress=False)
    message = str(error.value)
    assert f"expected {expected}, got {PAYLOAD_MD5}" in message
    assert "point data.url at a good copy" in message and f"set data.md5={PAYLOAD_MD5}" in message
    assert list(tmp_path.iterdir()) == []


def test_good_dest_is_kept_without_downloading(tmp_path):
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(PAYLOAD)
    assert fetch(_closed_port_url(), dest, PAYLOAD_MD5.upper(), retries=0) == dest
    assert dest.read_bytes() == PAYLOAD


def test_good_dest_survives_a_bad_download(server, tmp_path):
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(b"the archive downloaded last time")
    with pytest.raises(InputError, match="md5 mismatch"):
        fetch(server.url, dest, "f" * 32, progress=False)
    assert dest.read_bytes() == b"the archive downloaded last time"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_local_sources(tmp_path, as_url):
    source = tmp_path / "copy of cifar.tar.gz"
    source.write_bytes(PAYLOAD)
    dest = fetch(source.as_uri() if as_url else str(source), tmp_path / "out" / "a.tar.gz", PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_missing_local_source(tmp_path, as_url):
    source = tmp_path / "nowhere.tar.gz"
    with pytest.raises(InputError, match=f"{source} not found; point data.url at a copy"):
        fetch(source.as_uri() if as_url else source, tmp_path / "a.tar.gz", PAYLOAD_MD5)


def test_malformed_md5(tmp_path):
    with pytest.raises(InputError, match="data.md5='xyz' is not an md5"):
        fetch(tmp_path / "x", tmp_path / "a.tar.gz", "xyz")
