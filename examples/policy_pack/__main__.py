"""An example policy pack for work pools: what a platform team enforces on every call.

Attach it to a pool (``toolkit pool create gpu --type docker --policy-pack examples/policy_pack``
or ``policy_packs=[...]`` in the pools project) and every run stack of the pool
is previewed and updated with it:

- ``no-privileged-containers`` (mandatory): no privileged Docker container or Kubernetes pod.
- ``allowed-image-registry`` (mandatory): images come from an allowed prefix.
- ``memory-limit`` (mandatory): each job sets a memory limit of at most ``max_memory_mb``.
- ``required-labels`` (advisory): jobs carry the labels the team's cost reports need.

Limits are policy configuration (``pulumi`` ``--policy-pack-config``), defaulting to the values below.
"""

import re

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

DOCKER_CONTAINER = "docker:index/container:Container"
KUBERNETES_JOB = "kubernetes:batch/v1:Job"
DEFAULTS = {
    "allowed_prefixes": ["toolkit-runner", "registry.internal.example/"],
    "max_memory_mb": 4096,
    "required_labels": ["team"],
}
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_MB = {None: 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 2**20, "K": 1e3 / 2**20, "M": 1e6 / 2**20,
       "G": 1e9 / 2**20, "T": 1e12 / 2**20}


def _config(args: ResourceValidationArgs, key: str):
    return args.get_config().get(key, DEFAULTS[key])


def _pod_containers(props: dict) -> list[dict]:
    pod = props.get("spec", {}).get("template", {}).get("spec", {})
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def _memory_mb(quantity: str) -> float | None:
    match = _QUANTITY.match(str(quantity))
    return float(match.group(1)) * _MB[match.group(2)] if match else None


def no_privileged(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == DOCKER_CONTAINER and args.props.get("privileged"):
        report_violation("Containers must not run privileged: drop privileged=True (cap_add grants single capabilities).")
    if args.resource_type == KUBERNETES_JOB:
        for container in _pod_containers(args.props):
            if container.get("securityContext", {}).get("privileged"):
                report_violation(f"Container {container.get('name')!r} must not run privileged.")


def allowed_image(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    prefixes = _config(args, "allowed_prefixes")
    images = []
    if args.resource_type == DOCKER_CONTAINER:
        images = [args.props.get("image")]
    elif args.resource_type == KUBERNETES_JOB:
        images = [container.get("image") for container in _pod_containers(args.props)]
    for image in images:
        if isinstance(image, str) and not image.startswith(tuple(prefixes)):
            report_violation(f"Image {image!r} is not from an allowed registry; allowed prefixes: {', '.join(prefixes)}.")


def memory_limit(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    limit = _config(args, "max_memory_mb")
    if args.resource_type == DOCKER_CONTAINER:
        memory = args.props.get("memory")
        if not memory:
            report_violation(f"Set a memory limit (mem_limit) of at most {limit:g} MB.")
        elif memory > limit:
            report_violation(f"Memory limit {memory:g} MB is above the pool's maximum of {limit:g} MB.")
    elif args.resource_type == KUBERNETES_JOB:
        for container in _pod_containers(args.props):
            quantity = container.get("resources", {}).get("limits", {}).get("memory")
            memory = _memory_mb(quantity) if quantity else None
            if memory is None:
                report_violation(f"Container {container.get('name')!r} needs a memory limit of at most {limit:g} MB.")
            elif memory > limit:
                report_violation(f"Container {container.get('name')!r} asks for {quantity}, above {limit:g} MB.")


def required_labels(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == DOCKER_CONTAINER:
        present = {entry.get("label") for entry in args.props.get("labels") or []}
    elif args.resource_type == KUBERNETES_JOB:
        present = set(args.props.get("metadata", {}).get("labels", {}))
    else:
        return
    missing = [label for label in _config(args, "required_labels") if label not in present]
    if missing:
        report_violation(f"Missing labels {', '.join(missing)}: pass labels={{...}} so the run is attributed.")


def _schema(key: str, schema: dict) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={key: {**schema, "default": DEFAULTS[key]}})


PolicyPack(
    name="toolkit-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="no-privileged-containers",
            description="Jobs never run privileged.",
            validate=no_privileged,
        ),
        ResourceValidationPolicy(
            name="allowed-image-registry",
            description="Job images come from the team's registry.",
            validate=allowed_image,
            config_schema=_schema("allowed_prefixes", {"type": "array", "items": {"type": "string"}}),
        ),
        ResourceValidationPolicy(
            name="memory-limit",
            description="Jobs set a memory limit no larger than the pool allows.",
            validate=memory_limit,
            config_schema=_schema("max_memory_mb", {"type": "integer", "minimum": 1}),
        ),
        ResourceValidationPolicy(
            name="required-labels",
            description="Jobs carry the labels cost reports need.",
            enforcement_level=EnforcementLevel.ADVISORY,
            validate=required_labels,
            config_schema=_schema("required_labels", {"type": "array", "items": {"type": "string"}}),
        ),
    ],
)
