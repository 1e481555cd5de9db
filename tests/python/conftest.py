"""Starts a real holdfast server (the release binary) on a free loopback port."""
import os
import re
import subprocess
import time

import pytest

API_KEY = "test-key"


class Server:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.http_url = f"http://127.0.0.1:{port}"


@pytest.fixture
def server():
    binary = os.environ.get("HOLDFAST_BIN", "target/release/holdfast")
    assert os.path.exists(binary), f"{binary} is missing: run `cargo build --release` (scripts/test does)"
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--api-key", API_KEY,
         "--ping-interval", "1s", "--pong-timeout", "3s"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 20
    port = None
    while port is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
    assert port, "the server did not print its address"
    yield Server(proc, port)
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
