"""Models from URLs (issue 28): ``--weights https://...#sha256=...`` downloaded once into the cache,
atomically, verified; wrong hash, no network, a truncated or damaged cache: one-line errors or a
fresh download. A local HTTP server on 127.0.0.1 runs inside the test."""

from __future__ import annotations

import hashlib
import http.server
import inspect
import os
import socket
import threading

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from fusionnet_keras.cli import main
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.pretrained.download import fetch

PAYLOAD = np.random.default_rng(7).bytes(300_000)


class _Server:
    """Serves ``files`` (name -> bytes); ``short`` names are sent cut in half with the full length."""

    def __init__(self, files):
        self.files, self.short, self.requests = files, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                name = self.path.lstrip("/")
                server.requests.append(name)
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if name in server.short else data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name, data=None):
        digest = hashlib.sha256(self.files[name] if data is None else data).hexdigest()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}#sha256={digest}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server({"model.keras": PAYLOAD})
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_downloads_once_into_the_cache(server, cache):
    url = server.url("model.keras")
    path = fetch(url)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert path == cache / "downloads" / digest / "model.keras"
    assert path.read_bytes() == PAYLOAD
    assert fetch(url) == path
    assert server.requests == ["model.keras"]  # the second call used the cache
    assert _files(cache) == [f"downloads/{digest}/model.keras"]  # no temporaries left


def test_wrong_hash_is_refused_and_nothing_is_cached(server, cache):
    url = server.url("model.keras", data=b"something else")
    with pytest.raises(FusionNetError, match="has sha256 .* not the URL's .*refused") as info:
        fetch(url)
    assert "\n" not in str(info.value)
    assert not cache.exists() or _files(cache) == []


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "empty"])
def test_damaged_cached_file_is_fetched_again(server, cache, damage):
    url = server.url("model.keras")
    path = fetch(url)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 3], "corrupt": data[:-1] + bytes([data[-1] ^ 1]),
                      "empty": b""}[damage])
    assert fetch(url) == path and path.read_bytes() == PAYLOAD
    assert server.requests == ["model.keras", "model.keras"]


def test_partial_download_is_an_error(server, cache):
    server.short.add("model.keras")
    with pytest.raises(FusionNetError, match="was cut short"):
        fetch(server.url("model.keras"))
    assert not cache.exists() or _files(cache) == []


def test_no_network_and_http_errors(server, cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    digest = "0" * 64
    with pytest.raises(FusionNetError, match=r"cannot download .*no network\?"):
        fetch(f"http://127.0.0.1:{port}/model.keras#sha256={digest}")
    with pytest.raises(FusionNetError, match="HTTP 404"):
        fetch(server.url("model.keras").replace("/model.keras", "/missing.keras"))


@pytest.mark.parametrize("url, needle", [
    ("https://example.org/model.keras", "needs '#sha256=<64 hex digits>'"),
    ("https://example.org/model.keras#sha256=abc", "needs '#sha256=<64 hex digits>'"),
    ("http://example.org/model.keras#sha256=" + "0" * 64, "use https://"),
    ("https://example.org/#sha256=" + "0" * 64, "does not end in a file name"),
])
def test_unusable_urls(cache, url, needle):
    with pytest.raises(FusionNetError, match=needle.replace("?", r"\?")):
        fetch(url)


def test_predict_with_a_url(tmp_path, cache):
    import fusionnet_keras as fk

    from conftest import randomize_batchnorm

    net = randomize_batchnorm(fk.FusionNet(nb_filters=2, depth=1), seed=1)
    net.save(tmp_path / "net.keras")
    image = (np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image)
    s = _Server({"net.keras": (tmp_path / "net.keras").read_bytes()})
    try:
        kwargs = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
        runner = CliRunner(**kwargs)
        args = ["predict", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--tta", "1", "--pad", "8"]
        result = runner.invoke(main, [*args, "-w", s.url("net.keras")])
        assert result.exit_code == 0, result.output
        expected = fk.predict(net, image / np.float32(255), tta=1, pad=8)
        np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), expected, atol=1e-5)
        result = runner.invoke(main, [*args, "--overwrite", "-w", s.url("net.keras", data=b"x")])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "refused" in result.stderr
    finally:
        s.close()
