"""The toolkit's Python language host: the ``pulumi-language-python`` plugin the engine starts.

A project with ``runtime: python`` (the pools-as-code project, or any user
project run with ``pulumi preview/up``) needs this plugin. Pulumi's own is a Go
program whose module the Go proxy here refuses, so the toolkit ships this one,
built on the ``LanguageRuntime`` protos of the ``pulumi`` package.

Protocol (as the engine drives a language plugin): the engine runs the
executable with its own address as the last argument, reads the port of our
gRPC server from the first line of stdout, and calls ``GetRequiredPackages``
(falling back to ``GetRequiredPlugins``), ``GetPluginInfo``, ``About`` and, per
preview or update, ``Run``. Anything written to stdout/stderr afterwards is
shown to the user as program output.

Python policy packs (``--policy-pack DIR`` with ``runtime: python`` in its
``PulumiPolicy.yaml``) start through ``RunPlugin``: since CLI 3.1xx the engine
asks the language host of the pack's runtime to run the pack's directory and
relays the streamed output, reading the analyzer's port from its first line;
the ``pulumi-analyzer-policy-python`` executable is only the fallback when no
language host exists. ``RunPlugin`` here does what Pulumi's own host does:
``python <pack dir> <engine address> ...`` runs the pack's ``__main__.py``,
whose ``PolicyPack(...)`` serves the analyzer.

``Run`` starts ``program_exec.py`` in a fresh interpreter, as Pulumi's own host
does: the program's modules declare resources when imported, so each run
needs fresh module state; and the project may pin its own virtualenv.

Interpreters, and why:

* The host itself runs on the toolkit's interpreter, whose absolute path
  ``install_language_host`` writes into the shim: the host imports the
  toolkit, which a project's virtualenv or a ``PULUMI_PYTHON_CMD`` need not
  have.
* The program runs on the project's virtualenv when ``Pulumi.yaml`` declares
  one (``runtime.options.virtualenv``, or ``.venv`` with ``toolchain: uv``), since
  that is the project's explicit choice (a policy pack: its ``PulumiPolicy.yaml``,
  or the ``venv`` directory Pulumi's own host looks for by default); else on ``PULUMI_PYTHON_CMD`` (the
  toolkit sets it to its own interpreter for every Pulumi call, so dynamic
  providers and programs see the same packages); else on the host's
  interpreter. ``program_exec.py`` runs by path and needs only ``pulumi``.

Not done here: installing dependencies (``pulumi install`` only checks the
interpreter: nothing may be downloaded at run time), the ``poetry`` toolchain,
typecheckers, debugging, and code generation.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.json_format import MessageToDict
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

from toolkit import settings
from toolkit.errors import ConfigError
from toolkit.toolchain.program_exec import EXIT_REPORTED
from toolkit.toolchain.pulumi_env import HOST_PYTHON_ENV

HOST_NAME = "pulumi-language-python"
EXEC_SCRIPT = Path(__file__).with_name("program_exec.py")
PARENT_ENV = "TOOLKIT_LANGUAGE_HOST_PARENT"
"""The engine's pid as the shim saw it: the host's imports take seconds on a busy machine, and an engine
that ended meanwhile would otherwise leave the host its new parent's pid to wait on for ever."""


def shim_text(python: str) -> str:
    """The executable the engine starts: this module on the calling toolkit's interpreter, else ``python``."""
    return (
        f'#!/bin/sh\n{PARENT_ENV}=$PPID exec "${{{HOST_PYTHON_ENV}:-{python}}}" '
        '-u -m toolkit.toolchain.language_host "$@"\n'
    )


def install_language_host(bin_dir: Path) -> tuple[Path, bool]:
    """Write ``pulumi-language-python`` into ``bin_dir`` for this interpreter; returns ``(path, changed)``."""
    path = bin_dir / HOST_NAME
    text = shim_text(sys.executable)
    if path.exists() and path.read_text() == text and os.access(path, os.X_OK):
        return path, False
    bin_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o755)
    os.replace(temporary, path)  # an engine starting the host never sees half a script
    return path, True


def pulumis_own_language_host() -> Path | None:
    """Pulumi's ``pulumi-language-python`` where the engine would find it, if one is installed."""
    pulumi = settings.pulumi_binary()
    ours = settings.bin_dir() / HOST_NAME
    on_path = shutil.which(HOST_NAME)
    candidates = [pulumi.parent / HOST_NAME if pulumi else None, Path(on_path) if on_path else None]
    for candidate in candidates:
        if candidate is None or not candidate.is_file() or candidate.absolute() == ours:
            continue
        with candidate.open("rb") as handle:
            if b"toolkit.toolchain.language_host" not in handle.read(512):  # not a toolkit shim elsewhere
                return candidate
    return None


def program_interpreter(info: language_pb2.ProgramInfo) -> str:
    """The interpreter a project's program runs on (see the module docstring for the order)."""
    options: dict[str, Any] = MessageToDict(info.options) if info.HasField("options") else {}
    toolchain = options.get("toolchain", "pip")
    if toolchain not in ("pip", "uv"):
        raise ConfigError(
            f"Pulumi.yaml sets runtime.options.toolchain to {toolchain!r}, which the toolkit's language host "
            "does not support. Set runtime.options.virtualenv to that environment's directory instead"
        )
    virtualenv = options.get("virtualenv") or (".venv" if toolchain == "uv" else None)
    if virtualenv:
        root = Path(info.root_directory or ".")
        venv = Path(virtualenv) if Path(virtualenv).is_absolute() else root / virtualenv
        python = venv / "bin" / "python"
        if not python.exists():
            raise ConfigError(
                f"Pulumi.yaml's virtualenv {virtualenv!r} has no interpreter at {python}. Create it "
                f"(python3 -m venv {venv} && {venv}/bin/pip install -r requirements.txt) or remove the option"
            )
        return str(python)
    return os.environ.get("PULUMI_PYTHON_CMD") or sys.executable


def plugin_interpreter(info: language_pb2.ProgramInfo) -> str:
    """The interpreter a plugin (a policy pack) runs on: its declared or conventional ``venv``, else the program's.

    Pulumi's own host runs plugins only from a virtualenv (``venv`` by default);
    the toolkit's also runs them on the toolkit's interpreter, which has
    ``pulumi-policy`` installed, so a pack directory needs no environment of its own.
    """
    conventional = Path(info.root_directory or ".") / "venv" / "bin" / "python"
    options: dict[str, Any] = MessageToDict(info.options) if info.HasField("options") else {}
    if not options.get("virtualenv") and options.get("toolchain", "pip") == "pip" and conventional.exists():
        return str(conventional)
    return program_interpreter(info)


def _program_path(request: language_pb2.RunRequest) -> Path:
    directory = request.info.program_directory or request.pwd or "."
    return Path(directory) / (request.info.entry_point or request.program or ".")


def exec_command(request: language_pb2.RunRequest, python: str, engine_address: str) -> list[str]:
    """The command line of ``program_exec.py`` for one ``Run``."""
    command = [python, "-u", str(EXEC_SCRIPT), "--monitor", request.monitor_address,
               "--project", request.project, "--stack", request.stack, "--parallel", str(request.parallel)]
    optional = {
        "--engine": engine_address,
        "--organization": request.organization,
        "--root-directory": request.info.root_directory,
        "--pwd": request.pwd,
    }
    for flag, value in optional.items():
        if value:
            command += [flag, value]
    if request.dryRun:
        command.append("--dry-run")
    return [*command, "--", str(_program_path(request)), *request.args]


def _exit_message(code: int) -> str:
    if code < 0:
        return f"the Python program was stopped by signal {signal.Signals(-code).name}"
    return (
        f"the Python program exited with status {code} without reporting an error; "
        "its output above says why (a sys.exit() in the program ends it this way)"
    )


def _interrupt(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGINT first (the program may clean up), SIGKILL if it is still running after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()


class LanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    """The ``LanguageRuntime`` service; methods not defined here answer UNIMPLEMENTED."""

    def __init__(self, engine_address: str) -> None:
        self.engine_address = engine_address
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def GetRequiredPlugins(self, request: Any, context: grpc.ServicerContext) -> Any:
        return language_pb2.GetRequiredPluginsResponse()

    def GetRequiredPackages(self, request: Any, context: grpc.ServicerContext) -> Any:
        # Empty on purpose: the engine loads a provider when the program first registers one of its
        # resources. Listing every installed pulumi_* SDK (as Pulumi's host does) would make the engine
        # demand plugins of SDKs that are installed but unused, which are absent here by design.
        return language_pb2.GetRequiredPackagesResponse()

    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return plugin_pb2.PluginInfo(version=package_version("pulumi"))

    def About(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            python = program_interpreter(request.info)
            found = subprocess.run([python, "--version"], capture_output=True, text=True, timeout=30)
        except (ConfigError, OSError, subprocess.SubprocessError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return language_pb2.AboutResponse(
            executable=python, version=found.stdout.strip().removeprefix("Python "),
            metadata={"host": "toolkit"},
        )

    def InstallDependencies(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            python = program_interpreter(request.info)
        except ConfigError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        yield language_pb2.InstallDependenciesResponse(
            stdout=f"The program runs on {python}; the toolkit's language host installs nothing. "
            f"Install the program's requirements into that interpreter with pip.\n".encode()
        )

    def Run(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            python = program_interpreter(request.info)
        except ConfigError as exc:
            return language_pb2.RunResponse(error=str(exc))
        env = {
            **os.environ,
            "PULUMI_CONFIG": json.dumps(dict(request.config)),
            "PULUMI_CONFIG_SECRET_KEYS": json.dumps(list(request.configSecretKeys)),
        }
        try:
            process = subprocess.Popen(exec_command(request, python, self.engine_address), env=env)
        except OSError as exc:
            return language_pb2.RunResponse(
                error=f"could not start the Python interpreter {python!r}: {exc}. "
                "Set PULUMI_PYTHON_CMD or Pulumi.yaml's runtime.options.virtualenv to a working one"
            )
        with self._lock:
            self._running.add(process)
        # The engine cancelling the call (Ctrl-C, engine exit) must not leave the program running.
        context.add_callback(lambda: _interrupt(process))
        try:
            code = process.wait()
        finally:
            with self._lock:
                self._running.discard(process)
        if code == 0:
            return language_pb2.RunResponse()
        if code == EXIT_REPORTED:
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=_exit_message(code))

    def RunPlugin(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """Run a plugin written in Python (a policy pack) and stream its output and exit code back."""
        try:
            python = plugin_interpreter(request.info)
        except ConfigError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        env = dict(entry.split("=", 1) for entry in request.env if "=" in entry) or dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # the engine waits for the analyzer's port on the first line
        command = [python, "-u", request.info.program_directory or request.pwd, *request.args]
        try:
            process = subprocess.Popen(
                command, cwd=request.pwd or None, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"could not start {python!r} for a plugin: {exc}")
        # The engine ends a plugin by cancelling this call: the pack must not outlive it.
        context.add_callback(lambda: _interrupt(process))
        chunks: queue.Queue[Any] = queue.Queue()
        readers = [
            threading.Thread(target=_pump, args=(process.stdout, "stdout", chunks), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, "stderr", chunks), daemon=True),
        ]
        for reader in readers:
            reader.start()
        open_streams = len(readers)
        while open_streams:
            chunk = chunks.get()
            if chunk is None:
                open_streams -= 1
                continue
            yield chunk
        yield language_pb2.RunPluginResponse(exitcode=process.wait())

    def Cancel(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            running = list(self._running)
        for process in running:
            _interrupt(process)
        return empty_pb2.Empty()


def _pump(stream: Any, name: str, chunks: queue.Queue[Any]) -> None:
    """Forward a plugin's output stream as it comes (``None`` marks its end)."""
    try:
        for data in iter(lambda: stream.read1(65536), b""):
            chunks.put(language_pb2.RunPluginResponse(**{name: data}))
    finally:
        chunks.put(None)


def _stop_when_orphaned(server: grpc.Server, parent: int) -> None:
    """The engine may die without stopping us (even before we started); a host nobody can reach must not linger."""
    while os.getppid() == parent:
        time.sleep(1.0)
    server.stop(grace=None)


def serve(engine_address: str) -> None:
    """Serve on a free local port, print it for the engine, and block until stopped."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageHost(engine_address), server)
    port = server.add_insecure_port("127.0.0.1:0")
    # The engine ends a plugin it is done with by SIGINT: stop quietly, as a finished plugin.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: server.stop(grace=None))
    server.start()
    print(port, flush=True)
    parent = int(os.environ.pop(PARENT_ENV, "") or os.getppid())
    threading.Thread(target=_stop_when_orphaned, args=(server, parent), daemon=True).start()
    server.wait_for_termination()


def main(argv: list[str]) -> None:
    # The engine's address is the last argument; flags before it (logging, tracing) are ignored.
    serve(argv[-1] if argv and not argv[-1].startswith("-") else "")


if __name__ == "__main__":
    main(sys.argv[1:])
