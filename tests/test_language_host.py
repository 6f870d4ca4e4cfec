"""The toolkit's Python language host, driven by the real Pulumi CLI (preview, up, config, errors, destroy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime.proto import language_pb2

from tests.pulumi_cli import PulumiCli, make_cli
from toolkit.errors import ConfigError
from toolkit.toolchain.language_host import install_language_host, program_interpreter
from toolkit.toolchain.pulumi_env import HOST_PYTHON_ENV, pulumi_env

PROGRAM = '''
import os
import sys

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class Echo(ResourceProvider):
    def create(self, props):
        return CreateResult(id_="echo-1", outs=props)


class Thing(Resource):
    def __init__(self, name, props):
        super().__init__(Echo(), name, props)


config = pulumi.Config()
print("program says", config.get("greeting"), "dry_run=" + str(pulumi.runtime.is_dry_run()),
      "venv=" + os.environ.get("VIA_PROJECT_VENV", "no"))
thing = Thing("thing", {"greeting": config.require("greeting"), "token": config.require_secret("token")})
pulumi.export("greeting", thing.greeting)
pulumi.export("token", thing.token)
'''


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> PulumiCli:
    return make_cli(tmp_path_factory.mktemp("language-host"))


def _project(tmp_path: Path, program: str = PROGRAM, yaml_extra: str = "", main_dir: str = "") -> Path:
    """A project named after the test (the tests share one backend) in ``tmp_path/proj``."""
    root = tmp_path / "proj"
    root.mkdir()
    main = f"main: {main_dir}\n" if main_dir else ""
    (root / "Pulumi.yaml").write_text(f"name: {tmp_path.name}\nruntime:\n  name: python\n{yaml_extra}{main}")
    (root / main_dir / "__main__.py").parent.mkdir(parents=True, exist_ok=True)
    (root / main_dir / "__main__.py").write_text(program)
    return root


def _init(cli: PulumiCli, project: Path, stack: str) -> None:
    cli.run("stack", "init", stack, cwd=project)
    cli.run("config", "set", "greeting", "hello", cwd=project)
    cli.run("config", "set", "--secret", "token", "s3cr3t-value", cwd=project)


@pytest.mark.engine
def test_preview_up_config_secrets_and_destroy(cli: PulumiCli, tmp_path: Path) -> None:
    project = _project(tmp_path)
    _init(cli, project, "dev")

    preview = cli.run("preview", "--diff", cwd=project).output
    assert "+ 2 to create" in preview
    assert "program says hello dry_run=True venv=no" in preview
    assert "s3cr3t-value" not in preview
    assert "Traceback" not in preview  # the host stops quietly when the engine is done with it

    up = cli.run("up", "--yes", cwd=project).output
    assert "+ 2 created" in up and "dry_run=False" in up
    outputs = cli.json("stack", "output", "--show-secrets", cwd=project)
    assert outputs == {"greeting": "hello", "token": "s3cr3t-value"}
    state = cli.run("stack", "export", cwd=project).output
    assert "s3cr3t-value" not in state  # the secret config travelled as a secret

    cli.run("config", "set", "greeting", "hi again", cwd=project)
    update = cli.run("up", "--yes", cwd=project).output
    assert "program says hi again" in update and "1 updated" in update

    destroy = cli.run("destroy", "--yes", cwd=project).output
    assert "2 deleted" in destroy
    assert json.loads(cli.run("stack", "export", cwd=project).output)["deployment"].get("resources") in (None, [])


@pytest.mark.engine
def test_program_error_fails_preview_with_the_message_and_program_frames(cli: PulumiCli, tmp_path: Path) -> None:
    program = "import helper\nhelper.check(-1)\n"
    project = _project(tmp_path, program)
    (project / "helper.py").write_text(
        "def check(value):\n    raise ValueError(f'bad size {value!r}: use a positive number')\n"
    )
    cli.run("stack", "init", "dev", cwd=project)

    result = cli.run("preview", cwd=project, check=False)
    output = result.output
    assert result.returncode != 0
    assert "the program failed: ValueError: bad size -1: use a positive number" in output
    assert 'helper.py", line 2, in check' in output
    # Reported once, by the program (bail): no runtime frames, no second generic error from the engine.
    assert "program_exec.py" not in output and "runpy" not in output
    assert "an unhandled error occurred" not in output


@pytest.mark.engine
def test_exit_without_an_error_is_reported_by_the_host(cli: PulumiCli, tmp_path: Path) -> None:
    project = _project(tmp_path, "import sys\nsys.exit(3)\n")
    cli.run("stack", "init", "dev", cwd=project)
    result = cli.run("preview", cwd=project, check=False)
    assert result.returncode != 0
    assert "the Python program exited with status 3" in result.output


@pytest.mark.engine
def test_main_directory_and_declared_virtualenv(cli: PulumiCli, tmp_path: Path) -> None:
    project = _project(tmp_path, yaml_extra="  options:\n    virtualenv: venv\n", main_dir="src")
    (project / "src" / "extra.py").write_text("VALUE = 'imported from the program directory'\n")
    (project / "src" / "__main__.py").write_text(PROGRAM + "\nimport extra\nprint(extra.VALUE)\n")
    # A stand-in virtualenv whose interpreter marks the programs it runs.
    venv_python = project / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nVIA_PROJECT_VENV=yes exec {sys.executable} "$@"\n')
    venv_python.chmod(0o755)
    _init(cli, project, "dev")

    preview = cli.run("preview", cwd=project).output
    assert "venv=yes" in preview
    assert "imported from the program directory" in preview


@pytest.mark.engine
def test_missing_virtualenv_fails_preview_saying_how_to_create_it(cli: PulumiCli, tmp_path: Path) -> None:
    project = _project(tmp_path, yaml_extra="  options:\n    virtualenv: venv\n")
    cli.run("stack", "init", "dev", cwd=project)
    result = cli.run("preview", cwd=project, check=False)
    assert result.returncode != 0
    assert "Pulumi.yaml's virtualenv 'venv' has no interpreter" in result.output
    assert "python3 -m venv" in result.output


def _info(root: Path, **options: str) -> language_pb2.ProgramInfo:
    struct = struct_pb2.Struct()
    struct.update(options)
    return language_pb2.ProgramInfo(root_directory=str(root), program_directory=str(root), entry_point=".",
                                    options=struct)


def test_interpreter_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_PYTHON_CMD", raising=False)
    assert program_interpreter(_info(tmp_path)) == sys.executable
    monkeypatch.setenv("PULUMI_PYTHON_CMD", "/opt/python/bin/python3")
    assert program_interpreter(_info(tmp_path)) == "/opt/python/bin/python3"
    uv_python = tmp_path / ".venv" / "bin" / "python"
    uv_python.parent.mkdir(parents=True)
    uv_python.touch()
    assert program_interpreter(_info(tmp_path, toolchain="uv")) == str(uv_python)
    with pytest.raises(ConfigError, match="toolchain to 'poetry'.*Set runtime.options.virtualenv"):
        program_interpreter(_info(tmp_path, toolchain="poetry"))


def test_install_is_idempotent_and_names_this_interpreter(tmp_path: Path) -> None:
    path, changed = install_language_host(tmp_path)
    assert changed and os.access(path, os.X_OK) and sys.executable in path.read_text()
    assert install_language_host(tmp_path) == (path, False)
    path.write_text("#!/bin/sh\nexec /gone/python\n")
    assert install_language_host(tmp_path) == (path, True)


def test_the_shim_runs_the_calling_toolkits_interpreter_not_the_last_installers(tmp_path: Path) -> None:
    """The shim sits in the per-user bin directory every virtualenv with the toolkit shares: a CLI started
    by a toolkit process runs the host on that process's interpreter (``pulumi_env``), whichever
    virtualenv installed the shim last; a plain ``pulumi`` (no variable) gets the installer's."""
    shim, _ = install_language_host(tmp_path)
    shim.write_text(shim.read_text().replace(sys.executable, "/gone/other-venv/bin/python"))  # another venv's install
    recorder = tmp_path / "python"
    recorder.write_text(f'#!/bin/sh\necho "$0 $*" > "{tmp_path}/ran"\n')
    recorder.chmod(0o755)
    env = {**pulumi_env(), "PATH": os.environ["PATH"]}
    assert env[HOST_PYTHON_ENV] == sys.executable
    subprocess.run([str(shim), "127.0.0.1:1"], env={**env, HOST_PYTHON_ENV: str(recorder)}, check=True, timeout=30)
    assert (tmp_path / "ran").read_text().split()[:4] == [str(recorder), "-u", "-m", "toolkit.toolchain.language_host"]
    unset = {name: value for name, value in env.items() if name != HOST_PYTHON_ENV}
    gone = subprocess.run([str(shim), "127.0.0.1:1"], env=unset, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 127 and "/gone/other-venv/bin/python" in gone.stderr


def test_host_prints_its_port_and_exits_when_orphaned(tmp_path: Path) -> None:
    shim, _ = install_language_host(tmp_path)
    # A parent shell that starts the host and exits a second later: the host must not linger.
    parent = subprocess.run(
        ["sh", "-c", f'"{shim}" 127.0.0.1:1 >"{tmp_path}/port" 2>"{tmp_path}/err" & echo $!; sleep 1'],
        capture_output=True, text=True, check=True, timeout=30,
    )
    pid = int(parent.stdout.strip())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    assert not _alive(pid), "the language host outlived its parent"
    assert (tmp_path / "port").read_text().strip().isdigit()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_run_plugin_streams_a_python_plugins_output_and_exit_code(tmp_path: Path) -> None:
    """What the engine does to start a Python policy pack: RunPlugin on the pack's directory."""
    import grpc
    from pulumi.runtime.proto import language_pb2_grpc

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "__main__.py").write_text(
        "import sys\nprint('4242')\nprint('args', sys.argv[1:], file=sys.stderr)\nsys.exit(3)\n"
    )
    shim, _ = install_language_host(tmp_path / "bin")
    host = subprocess.Popen([str(shim), "127.0.0.1:1"], stdout=subprocess.PIPE, text=True)
    try:
        port = host.stdout.readline().strip()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = language_pb2.RunPluginRequest(
                pwd=str(tmp_path), args=["127.0.0.1:9"], env=[f"PATH={os.environ['PATH']}"], kind="analyzer",
                info=_info(plugin),
            )
            replies = list(language_pb2_grpc.LanguageRuntimeStub(channel).RunPlugin(request, timeout=60))
    finally:
        host.terminate()
        host.wait(timeout=30)
    stdout = b"".join(reply.stdout for reply in replies)
    stderr = b"".join(reply.stderr for reply in replies)
    assert stdout == b"4242\n" and b"args ['127.0.0.1:9']" in stderr
    assert replies[-1].WhichOneof("output") == "exitcode" and replies[-1].exitcode == 3


def test_plugins_run_from_their_conventional_venv_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.toolchain.language_host import plugin_interpreter

    monkeypatch.setenv("PULUMI_PYTHON_CMD", "/opt/python/bin/python3")
    assert plugin_interpreter(_info(tmp_path)) == "/opt/python/bin/python3"  # the toolkit's, with pulumi-policy
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.touch()
    assert plugin_interpreter(_info(tmp_path)) == str(venv_python)  # as Pulumi's own host would
