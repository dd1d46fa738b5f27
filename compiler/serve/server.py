"""A local Triton server over a model repository: found, started on 127.0.0.1 at free ports, stopped by its PID.

The server is the `tritonserver` that nvidia-pytriton bundles (the `serve` extra): Triton 2.51 with the Python
backend only. Two facts of that wheel are handled here, once: the Python backend's stub is kept per Python
version outside the backend folder, and its libraries sit in `nvidia_pytriton.libs`, which a backend folder
assembled elsewhere does not find by RPATH. The stub runs the first `python` on PATH (it ignores PYTHONPATH),
so this interpreter's folder goes first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ServerError(RuntimeError):
    """The server could not be found, did not start in time, or exited; carries the log's tail."""


def server_home() -> Path:
    """The folder holding `bin/tritonserver` (nvidia-pytriton's), or ServerError with the install line."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")  # not imported: only its files are needed
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("no Triton server: nvidia-pytriton is not installed (pip install 'compiler[serve]')")
    home = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise ServerError(f"nvidia-pytriton has no server binary at {home / 'bin' / 'tritonserver'}")
    return home


def _libraries(home: Path) -> Path:
    return home.parent.parent / "nvidia_pytriton.libs"


def stub_numpy_problem() -> str | None:
    """Why the bundled Python backend stub would answer with empty tensors here, or None. The stub runs each
    model.py in this interpreter (its folder leads PATH) and is built against the numpy that nvidia-pytriton declares
    (`numpy<2` for 0.7). Under numpy 2 it still answers 200 with the right names and shapes but 0 bytes of data
    (seen on the lent H100 with numpy 2.5.2, for every model on HTTP and gRPC; with numpy 1.26.4 the same server
    answered the engine's outputs exactly). So the server is not started rather than serving empty answers."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        declared = [Requirement(r) for r in metadata.requires("nvidia-pytriton") or []]
        have = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return None
    wanted = next((r.specifier for r in declared  # its own numpy requirement here, not an extra's
                   if r.name == "numpy" and (r.marker is None or r.marker.evaluate({"extra": ""}))), None)
    if wanted is None or wanted.contains(have, prereleases=True):
        return None
    return (f"nvidia-pytriton's Python backend stub is built for numpy{wanted} and this environment has numpy "
            f"{have}: its answers would carry no data. Fix: pip install 'numpy{wanted}' (what the serve extra "
            "resolves to)")


def _backends(home: Path, into: Path) -> Path:
    """A backend folder with the Python backend and the stub for this interpreter (links, not copies)."""
    python = into / "backends" / "python"
    python.mkdir(parents=True, exist_ok=True)
    for item in (home / "backends" / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    stub = home / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no Python backend stub for Python {sys.version_info[0]}."
                          f"{sys.version_info[1]}")
    shutil.copy(stub, python / "triton_python_backend_stub")
    return into / "backends"


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: each socket stays bound until all are picked, since a port released at once
    can be handed out again by the next bind (HTTP and gRPC once got the same port, and the server refused it)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@dataclass
class Server:
    """A running server: its PID, its ports and its log."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    workdir: Path
    models: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT to the PID (Triton unloads and exits), SIGKILL after STOP_TIMEOUT_S; the work folder goes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(repository: Path, models: list[str] | None = None, config_name: str | None = None,
          timeout_s: float = START_TIMEOUT_S) -> Server:
    """Start `tritonserver` on 127.0.0.1 (free HTTP, gRPC and metrics ports) over `repository`, loading `models`
    (all when None; [] loads none, for `load` to try them one by one) with `--model-config-name=config_name` where
    given. Returns once /v2/health/ready answers 200; raises ServerError (server stopped) if it exits or the
    timeout passes, and before starting anything where the stub cannot answer (stub_numpy_problem)."""
    home = server_home()
    problem = stub_numpy_problem()
    if problem:
        raise ServerError(problem)
    workdir = Path(tempfile.mkdtemp(prefix="compiler-triton-"))
    try:
        backends = _backends(home, workdir)
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    ports = free_ports(3)
    args = [str(home / "bin" / "tritonserver"), f"--model-repository={repository}", f"--backend-directory={backends}",
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
            f"--http-port={ports[0]}", f"--grpc-port={ports[1]}", f"--metrics-port={ports[2]}",
            "--allow-metrics=false", "--strict-readiness=true", "--exit-on-error=false"]
    if models is not None:
        args += ["--model-control-mode=explicit"] + [f"--load-model={m}" for m in models]
    if config_name:
        args.append(f"--model-config-name={config_name}")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(_libraries(home)), env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log_path = workdir / "tritonserver.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(process, *ports, log_path, workdir, list(models or []))
    try:
        wait_until_ready(server, timeout_s)
    except ServerError:
        server.stop()
        raise
    return server


def wait_until_ready(server: Server, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"tritonserver exited with code {server.process.returncode}:\n{server.log()}")
        if health(server, "ready") == 200:
            return
        time.sleep(0.2)
    raise ServerError(f"tritonserver was not ready within {timeout_s:.0f} s:\n{server.log()}")


def health(server: Server, what: str = "ready") -> int:
    """The HTTP status of /v2/health/<what> (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://{server.http}/v2/health/{what}", timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def load(server: Server, model: str, timeout_s: float = START_TIMEOUT_S) -> tuple[bool, str]:
    """Ask the server to load `model` (explicit model control): (loaded, the server's message)."""
    import json

    request = urllib.request.Request(f"http://{server.http}/v2/repository/models/{model}/load", data=b"{}",
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return answer.status == 200, ""
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            message = json.loads(body).get("error", body)
        except ValueError:
            message = body
        # the answer can be as vague as "failed to poll from model repository": the log says why
        reasons = [line.split("] ", 1)[-1] for line in server.log(20000).splitlines()
                   if line.startswith("E") and (f"'{model}'" in line or f" {model}\"" in line)]
        return False, "\n".join([message.strip(), *reasons[-3:]])


@contextmanager
def running(repository: Path, models: list[str] | None = None, config_name: str | None = None,
            timeout_s: float = START_TIMEOUT_S) -> Iterator[Server]:
    """`start`, then `stop` whatever happens."""
    server = start(repository, models, config_name, timeout_s)
    try:
        yield server
    finally:
        server.stop()
