"""Templating rules: precedence, env merging, strict placeholders, typed values, validation errors."""

from __future__ import annotations

import pytest

from toolkit import templating
from toolkit.errors import ConfigError, TemplateError
from toolkit.secretvalues import Secret

TEMPLATE = {
    "job_configuration": {
        "image": "{{ image }}",
        "memory": "{{ memory }}",
        "name": "job-{{ run_id }}-{{ image }}",
        "env": "{{ env }}",
        "labels": {"team": "{{ team }}", "fixed": "yes"},
        "args": ["--epochs", "{{ epochs }}", "{{ missing_optional }}"],
        "spec": {"containers": [{"name": "main", "resources": {"limits": {"memory": "{{ memory }}"}}}]},
    },
    "variables": {
        "type": "object",
        "properties": {
            "image": {"type": "string", "default": "base:1"},
            "memory": {"type": "string"},
            "epochs": {"type": "integer", "default": 3},
            "env": {"type": "object", "additionalProperties": {"type": "string"}, "default": {"A": "1"}},
            "team": {"type": "string"},
            "missing_optional": {"type": "string"},
            "token": {"type": "string", "writeOnly": True},
            "customizations": {"type": "array", "items": {"type": "object"}},
        },
    },
}
RUNTIME = {"run_id": "r1", "pool_name": "p", "function_name": "f"}


def render(*layers, root=""):
    return templating.render(TEMPLATE, list(layers), RUNTIME, "gpu", root)


def test_whole_placeholder_keeps_type_and_interpolation_stringifies():
    config, _ = render({"epochs": 7})
    assert config["args"] == ["--epochs", 7]
    assert config["name"] == "job-r1-base:1"


def test_placeholder_without_value_removes_its_key():
    config, _ = render()
    assert "memory" not in config and "team" not in config["labels"]
    assert config["labels"] == {"fixed": "yes"}
    assert config["spec"]["containers"][0]["resources"]["limits"] == {}


def test_precedence_pool_defaults_then_layers_in_order():
    config, variables = render({"image": "dec:1", "epochs": 5}, {"image": "opt:2"}, {"image": "submit:3"})
    assert config["image"] == "submit:3" and variables["epochs"] == 5


def test_env_is_deep_merged_and_dotted_keys_set_one_entry():
    config, _ = render({"env": {"B": "2"}}, {"env.C": "3"}, {"env": {"A": "override"}})
    assert config["env"] == {"A": "override", "B": "2", "C": "3"}


def test_unknown_variable_lists_valid_names_and_closest_match():
    with pytest.raises(ConfigError) as info:
        render({"memroy": "64Gi"})
    message = str(info.value)
    assert "unknown job variable 'memroy' for pool 'gpu'" in message
    assert "Did you mean 'memory'?" in message
    assert "Valid: customizations, env, epochs, image, memory" in message


def test_wrong_type_names_variable_expected_type_and_value():
    with pytest.raises(ConfigError) as info:
        render({"epochs": "many"})
    assert str(info.value).startswith("job variable 'epochs' for pool 'gpu' expects integer, got 'many' (str)")


def test_schema_secret_variable_is_wrapped_and_toolkit_secret_validates_as_string():
    _, variables = render({"token": "abc", "env": {"K": Secret("v")}})
    assert isinstance(variables["token"], Secret) and variables["token"].reveal() == "abc"
    assert isinstance(variables["env"]["K"], Secret)


def test_secret_cannot_be_interpolated_into_a_longer_string():
    template = {"job_configuration": {"x": "prefix-{{ token }}"}, "variables": TEMPLATE["variables"]}
    with pytest.raises(TemplateError, match="cannot be interpolated"):
        templating.render(template, [{"token": Secret("s")}], RUNTIME, "gpu")


def test_customizations_apply_last_at_the_root():
    patches = [
        {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"},
        {"op": "replace", "path": "/image", "value": "patched:1"},
    ]
    config, _ = render({"memory": "8Gi", "customizations": patches})
    assert config["spec"]["containers"][0]["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}
    assert config["image"] == "patched:1"


def test_customizations_can_target_a_sub_document():
    config, _ = render({"customizations": [{"op": "add", "path": "/containers/0/name", "value": "x"}]}, root="/spec")
    assert config["spec"]["containers"][0]["name"] == "x"


def test_bad_customization_is_a_config_error():
    with pytest.raises(ConfigError, match="does not apply"):
        render({"customizations": [{"op": "replace", "path": "/nope/0", "value": 1}]})


def test_placeholder_naming_no_variable_is_an_error_naming_it():
    template = {"job_configuration": {"x": "{{ imagee }}"}, "variables": TEMPLATE["variables"]}
    with pytest.raises(TemplateError, match=r"\{\{ imagee \}\}"):
        templating.check_template(template, "pool 'gpu'")


def test_invalid_json_schema_is_rejected():
    template = {"job_configuration": {}, "variables": {"type": "object", "properties": {"x": {"type": "strnig"}}}}
    with pytest.raises(TemplateError, match="not a valid JSON schema"):
        templating.check_template(template, "pool 'gpu'")


def test_runtime_placeholders_need_no_variable():
    templating.check_template(
        {"job_configuration": {"n": "{{ run_id }}-{{ pool_name }}-{{ function_name }}"}, "variables": {"type": "object"}},
        "pool 'p'",
    )


def test_schema_bounds_of_a_pool_are_enforced_naming_the_bound():
    """A platform team bounds variables in the pool's schema: maximum on memory, enum on images."""
    from toolkit.pools.as_code import template_with_defaults

    template = template_with_defaults("docker")
    properties = template["variables"]["properties"]
    properties["cpus"]["maximum"] = 4
    properties["image"]["enum"] = ["toolkit-runner:stable", "registry.internal.example/ml:2"]
    properties["gpu_memory_gb"] = {"type": "integer", "minimum": 1, "maximum": 64}
    template["job_configuration"]["labels"] = {"gpu-memory": "{{ gpu_memory_gb }}"}

    def render(**overrides):
        return templating.render(template, [overrides], {}, "olympic")

    with pytest.raises(ConfigError) as info:
        render(gpu_memory_gb=128)
    assert str(info.value) == (
        "job variable 'gpu_memory_gb' for pool 'olympic' expects at most 64 (maximum), got 128 (int). "
        "Pass a value within the pool's bound"
    )
    with pytest.raises(ConfigError, match=r"'cpus' for pool 'olympic' expects at most 4 \(maximum\), got 8"):
        render(cpus=8)
    with pytest.raises(ConfigError) as info:
        render(image="python:3.11")
    assert "expects one of 'toolkit-runner:stable', 'registry.internal.example/ml:2' (enum), got 'python:3.11'" in str(info.value)
    assert str(info.value).endswith("Pass one of the pool's allowed values")
    config, variables = render(gpu_memory_gb=64, cpus=4, image="toolkit-runner:stable")
    assert variables["gpu_memory_gb"] == 64 and config["labels"] == {"gpu-memory": 64}
