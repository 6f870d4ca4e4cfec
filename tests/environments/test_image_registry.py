"""A pool's image_registry: parsing, credentials, cloud names, the push program, and refusals before anything exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.infra.mocking import run_program
from toolkit import kubernetes
from toolkit.cli.main import app
from toolkit.environments.spec import Environment, Pin
from toolkit.environments.stack import _image_program
from toolkit.errors import ConfigError
from toolkit.infra.image_registry import ImageRegistry, registry_of
from toolkit.pools.registry import PoolRegistry, WorkPool, parse_pool
from toolkit.settings import runner_image
from toolkit.targets.kubernetes.target import KubernetesTarget

PIN = Pin(name="six", version="1.16.0", wheel="six-1.16.0-py2.py3-none-any.whl", sha256="0" * 64, size=11053,
          source="packages")


def environment(registry: str | None) -> Environment:
    return Environment(kind="image", base="toolkit-runner:1", base_identity="sha256:1", python="3.11",
                       purelib="/usr/lib/python3/dist-packages", pins=(PIN,), registry=registry)


# -- the setting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "path"),
    [
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/ml", "123456789012.dkr.ecr.us-east-1.amazonaws.com", "ml"),
        ("us-docker.pkg.dev/proj/repo", "us-docker.pkg.dev", "proj/repo"),
        ("myacr.azurecr.io/ml", "myacr.azurecr.io", "ml"),
        ("127.0.0.1:5000/toolkit/", "127.0.0.1:5000", "toolkit"),
    ],
)
def test_a_url_names_a_host_and_a_repository_path(url: str, host: str, path: str) -> None:
    registry = ImageRegistry.model_validate(url)
    assert (registry.host, registry.path) == (host, path)
    assert registry.repository == f"{host}/{path}/toolkit-env"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("https://reg.example.com/ml", "must not name a scheme"),
        ("reg.example.com", "host[:port]/repository/path"),
        ("reg.example.com/ML", "lowercase letters"),
        ("reg.example.com/ml:1", "no tag or digest"),
        ({"url": "reg.example.com/ml", "username": "robot"}, "both username and password_env"),
        ({"url": "reg.example.com/ml", "username": "u", "password_env": "hunter2!"}, "name of an environment variable"),
    ],
)
def test_a_bad_image_registry_is_refused_when_the_pool_is_read(value: object, words: str) -> None:
    document = json.dumps({"name": "gpu", "type": "kubernetes", "image_registry": value})
    with pytest.raises(ConfigError, match="image_registry") as info:
        parse_pool(document, "gpu.json")
    assert words in str(info.value)


def test_plain_http_only_for_loopback_unless_told() -> None:
    assert ImageRegistry(url="127.0.0.1:5000/t").address == "http://127.0.0.1:5000"
    assert ImageRegistry(url="localhost:5000/t").plain_http
    assert ImageRegistry(url="reg.example.com/t").address == "https://reg.example.com"
    assert ImageRegistry(url="10.0.0.5:5000/t", insecure=True).address == "http://10.0.0.5:5000"


def test_cloud_registries_are_recognised() -> None:
    ecr = ImageRegistry(url="123456789012.dkr.ecr.eu-west-1.amazonaws.com/ml/team").ecr()
    assert ecr is not None and ecr.arn == "arn:aws:ecr:eu-west-1:123456789012:repository/ml/team/toolkit-env"
    gar = ImageRegistry(url="europe-west4-docker.pkg.dev/proj/repo/sub").artifact_registry()
    assert gar is not None and (gar.location, gar.project, gar.repository) == ("europe-west4", "proj", "repo")
    assert ImageRegistry(url="myacr.azurecr.io/ml").acr_name() == "myacr"
    other = ImageRegistry(url="reg.example.com/ml")
    assert (other.ecr(), other.artifact_registry(), other.acr_name()) == (None, None, None)


def test_registry_of_an_image_reference() -> None:
    assert registry_of("127.0.0.1:5000/t/toolkit-env@sha256:ab") == "127.0.0.1:5000"
    assert registry_of("python:3.11") == "docker.io" and registry_of("library/python") == "docker.io"


def test_the_password_comes_from_the_named_variable_only(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = ImageRegistry(url="reg.example.com/ml", username="robot", password_env="REG_TOKEN")
    monkeypatch.delenv("REG_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="'REG_TOKEN', which is not set"):
        registry.password()
    monkeypatch.setenv("REG_TOKEN", "t0ken")
    auth = json.loads(registry.dockerconfigjson())["auths"]["reg.example.com"]
    assert (auth["username"], auth["password"], auth["auth"]) == ("robot", "t0ken", "cm9ib3Q6dDBrZW4=")
    assert "t0ken" not in WorkPool(name="p", type="kubernetes", image_registry=registry).to_document()


def test_the_docker_configuration_is_used_when_it_knows_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    registry = ImageRegistry(url="reg.example.com/ml")
    assert registry.docker_config_entry() is None
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"reg.example.com": "ecr-login"}}))
    assert registry.docker_config_entry() == tmp_path / "config.json"


def test_pool_create_takes_a_registry_and_never_a_password(toolkit_home: Path) -> None:
    result = CliRunner().invoke(app, [
        "pool", "create", "k8s-reg", "--type", "kubernetes", "--storage", "s3://b/p",
        "--image-registry", "reg.example.com/ml", "--registry-username", "robot",
        "--registry-password-env", "REG_TOKEN", "--overwrite",
    ])
    assert result.exit_code == 0, result.output
    stored = PoolRegistry().get("k8s-reg").image_registry
    assert stored == ImageRegistry(url="reg.example.com/ml", username="robot", password_env="REG_TOKEN")


# -- the environment stack's push -------------------------------------------------------------


def test_a_registry_makes_another_environment_than_the_local_engine() -> None:
    local, pushed = environment(None), environment("reg.example.com/ml/toolkit-env")
    assert local.hash != pushed.hash and local.image_name == f"toolkit-env:{local.hash}"
    assert pushed.image_name == f"reg.example.com/ml/toolkit-env:{pushed.hash}"


def test_the_push_program_pushes_the_built_image_and_exports_its_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REG_TOKEN", "registry-password-never-in-plaintext")
    registry = ImageRegistry(url="reg.example.com/ml", username="robot", password_env="REG_TOKEN")
    env = environment(registry.repository)
    digest = "sha256:" + "ab" * 32
    run = run_program(lambda: _image_program(env, tmp_path, registry),
                      outputs={"docker:index/registryImage:RegistryImage": {"sha256Digest": digest},
                               "docker:index/remoteImage:RemoteImage": {"imageId": "sha256:built"}})
    image = run.one("docker:index/remoteImage:RemoteImage").inputs
    pushed = run.one("docker:index/registryImage:RegistryImage").inputs
    assert image["name"] == pushed["name"] == env.image_name
    assert pushed["keepRemotely"] is False and pushed["triggers"] == {"image_id": "sha256:built"}  # rebuilt: pushed
    provider = next(r for r in run.of_type("pulumi:providers:docker") if r.name == "registry")
    auth = json.loads(provider.inputs["registryAuth"])[0] if isinstance(provider.inputs["registryAuth"], str) \
        else provider.inputs["registryAuth"][0]
    assert (auth["address"], auth["username"]) == ("https://reg.example.com", "robot")
    assert "registry-password-never-in-plaintext" not in json.dumps(
        [r.raw for r in run.resources if r.name != "registry"]
    )
    assert "registryAuth" in provider.secret_paths() or any("password" in p for p in provider.secret_paths())
    assert run.exports["reference"] == f"{registry.repository}@{digest}"


def test_an_open_registry_is_pushed_to_without_credentials(tmp_path: Path) -> None:
    registry = ImageRegistry(url="127.0.0.1:5000/toolkit")
    run = run_program(lambda: _image_program(environment(registry.repository), tmp_path, registry))
    provider = next(r for r in run.of_type("pulumi:providers:docker") if r.name == "registry")
    auth = provider.inputs["registryAuth"]
    auth = (json.loads(auth) if isinstance(auth, str) else auth)[0]
    assert auth == {"address": "http://127.0.0.1:5000", "authDisabled": True}


# -- refusals before anything exists -----------------------------------------------------------


def _kubernetes_pool(image: str, **fields: object) -> str:
    template = KubernetesTarget.default_template()
    template["variables"]["properties"]["image"]["default"] = image
    PoolRegistry().save(WorkPool(name="k8s-remote", type="kubernetes", base_job_template=template,
                                 storage={"url": "s3://bucket/runs", "mode": "shared-prefix"}, **fields),
                        overwrite=True)
    return "k8s-remote"


@pytest.mark.docker
def test_a_remote_pool_without_a_registry_refuses_a_call_that_needs_packages(toolkit_home: Path) -> None:
    pool = _kubernetes_pool(runner_image())

    @kubernetes(pool=pool, packages=["humanize==4.11.0"], auto_packages=False)
    def f() -> None:
        return None

    with pytest.raises(ConfigError, match=r"pool 'k8s-remote' runs its jobs off this machine.*humanize==4\.11\.0.*"
                                          r"image_registry"):
        f.preview()


@pytest.mark.docker
def test_a_remote_base_not_on_this_machine_is_needed_only_when_the_call_adds_packages(toolkit_home: Path) -> None:
    pool = _kubernetes_pool("registry.invalid/team/runner:1", image_registry="registry.invalid/team")

    @kubernetes(pool=pool)
    def plain() -> int:
        return 1

    plan = plain.preview()
    assert plan.environment is not None and plan.environment.status == "base"

    @kubernetes(pool=pool, packages=["humanize==4.11.0"], auto_packages=False)
    def with_humanize() -> None:
        return None

    with pytest.raises(ConfigError, match=r"'registry.invalid/team/runner:1' of pool 'k8s-remote' is not on this "
                                          r"machine and could not be pulled"):
        with_humanize.preview()
