"""Starts a real holdfast server (the release binary, $HOLDFAST_BIN) on a free
loopback port for each test, and stops it by PID at teardown."""
import os
import queue
import re
import subprocess
import threading

import pytest

API_KEY = "test-key"
# A fast heartbeat so the ping tests take seconds, not minutes.
SERVER_ARGS = ["--api-key", API_KEY, "--allow-client-publish", "true", "--ping-interval", "1s", "--pong-timeout", "3s"]
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class Server:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.api_key = API_KEY
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.http_url = f"http://127.0.0.1:{port}"


def _tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture
def server(tmp_path):
    binary = os.environ.get("HOLDFAST_BIN", "target/release/holdfast")
    assert os.path.exists(binary), f"{binary} is missing: run `cargo build --release` (scripts/test does)"
    stderr_path = tmp_path / "holdfast.err"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", *SERVER_ARGS],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        # A thread reads stdout to the end (so the pipe never fills up and
        # blocks the server) and hands over the lines; the wait for the
        # address line is bounded even if the server prints nothing.
        lines = queue.Queue()

        def pump():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        port = None
        while port is None:
            try:
                line = lines.get(timeout=20)
            except queue.Empty:
                pytest.fail(f"the server printed no 'listening on' line within 20 s; stderr:\n{_tail(stderr_path)}")
            if line is None:
                pytest.fail(f"the server exited with {proc.wait()} before listening; stderr:\n{_tail(stderr_path)}")
            m = LISTENING.search(line)
            if m:
                port = int(m.group(1))
        yield Server(proc, port)
        assert proc.poll() is None, f"the server died during the test (exit {proc.returncode}); stderr:\n{_tail(stderr_path)}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
