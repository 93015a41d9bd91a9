"""A `segmentation-server` process on loopback, as an operator starts it: for load runs that
start their own server, and for the tests."""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def wait_for_serving(
    target: str, timeout_s: float = 60.0, alive: Callable[[], bool] = lambda: True
) -> None:
    """Waits until the server's gRPC health check answers SERVING (models warm); fails at once
    where `alive()` says the server is gone."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if not alive():
                raise RuntimeError(f"{target} exited before it reported SERVING")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} did not report SERVING within {timeout_s} s")
            time.sleep(0.1)


class ServerProcess:
    """A `segmentation-server` process on loopback, as an operator starts it."""

    def __init__(
        self,
        *flags: str,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        """`host` and `port`: where it listens (a free port by default); several replicas on
        loopback can share a port on 127.0.0.1, 127.0.0.2, ... behind one DNS name;
        `ready_timeout_s`: how long `with` waits for it to report SERVING."""
        import os
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        self.port = port or free_port()
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.target = f"{host}:{self.port}"
        script = Path(sys.executable).parent / "segmentation-server"
        # Where the project is not installed (a checkout on the GPU host), the module runs it.
        server = [str(script)] if script.exists() else [sys.executable, "-m", "service.main"]
        command = [
            *server, "--address", self.target, "--metrics-port", str(self.metrics_port), *flags,
        ]  # fmt: skip
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server's logging.
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""
        self.ready_timeout_s = ready_timeout_s

    def __enter__(self) -> ServerProcess:
        self.wait_until_serving()
        return self

    def wait_until_serving(self) -> None:
        """Waits for SERVING; where it does not come, stops the server and prints its log
        (stderr) before raising, so that a failed start says why."""
        try:
            wait_for_serving(
                self.target, self.ready_timeout_s, alive=lambda: self.process.poll() is None
            )
        except BaseException as error:
            self.stop()
            print(f"--- the log of the server at {self.target} ({error}) ---", file=sys.stderr)
            print(self.output.rstrip(), file=sys.stderr)
            print("--- end of its log ---", file=sys.stderr, flush=True)
            raise

    def stop(self, signal_number: int | None = None, timeout_s: float = 30.0) -> int:
        """Signals the server (SIGTERM by default), waits for it, keeps what it printed."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal_number or signal.SIGTERM)
        self.process.wait(timeout=timeout_s)
        if not self._log.closed:
            self._log.seek(0)
            self.output = self._log.read()
            self._log.close()
        return self.process.returncode

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
