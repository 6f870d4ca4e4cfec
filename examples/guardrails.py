"""Guardrails on a pool: the example policy pack and a concurrency limit on a Docker pool.

Creates (or replaces) the pool ``guarded-docker`` in your registry, previews a
privileged call (blocked by a mandatory policy), runs a compliant call (one
advisory warning: no ``team`` label) and lists the audit trail.

    python examples/guardrails.py
"""

from pathlib import Path

from toolkit import WorkPool, docker
from toolkit.errors import PolicyViolationError
from toolkit.guardrails.audit import audit_rows
from toolkit.pools.as_code import template_with_defaults
from toolkit.pools.registry import PoolRegistry

PACK = Path(__file__).resolve().parent / "policy_pack"

PoolRegistry().save(
    WorkPool(
        name="guarded-docker",
        type="docker",
        base_job_template=template_with_defaults("docker", mem_limit="512m"),
        policy_packs=[str(PACK)],
        max_concurrent_runs=2,
    ),
    overwrite=True,
)


@docker(pool="guarded-docker")
def square(x: int) -> int:
    return x * x


if __name__ == "__main__":
    plan = square.with_options(privileged=True).preview(3)
    print(plan, "\nallowed:", plan.allowed, "\n")
    try:
        square.with_options(privileged=True)(3)
    except PolicyViolationError as exc:
        print(exc, "\n")
    print("square(7) =", square(7))  # warns: the advisory required-labels policy
    for row in audit_rows()[-3:]:
        print(row.run_id, row.user, row.pool, row.function, row.outcome, row.resources)
