"""The seed's two examples (shared/reference/000), verbatim but for the import line and pool name.

One change more in the decorator example: the design had the call itself return
the future; released Prefect (3's ``InfrastructureBoundFlow``) made the call
block and return the value, and gives the future from ``.submit()``, so the
seed's ``future = my_k8s_flow()`` reads ``future = my_k8s_flow.submit()``.
``seed_script`` puts in the import line and the pool; the script prints the
seed's own output ("hello") and then one JSON line for ``run_client``.
"""

from __future__ import annotations

DECORATOR = '''\
from prefect import flow
{import_line}

@kubernetes(
    work_pool_name="{pool}", 
    memory=64000,
)
@flow
def my_k8s_flow():
    return "hello"

future = my_k8s_flow.submit() # Runs in the "{pool}" work pool
print(future.result())  # prints "hello"
'''

WORKER = '''\
from prefect import flow
{import_line}

@flow
def my_k8s_flow():
    return "hello"

with KubernetesWorker(
    work_pool_name="{pool}"
) as worker:
    future = worker.submit(my_k8s_flow, job_variables={{"memory": 64000}})
    print(future.result())  # prints "hello"
'''

SEEDS = {"decorator": (DECORATOR, "kubernetes"), "worker": (WORKER, "KubernetesWorker")}
"""Name -> (the seed's code, the name its ``from prefect_kubernetes import ...`` line imports)."""

FLOW_NAME = "my-k8s-flow"


def seed_script(seed: str, import_line: str, pool: str) -> str:
    code, _name = SEEDS[seed]
    return code.format(import_line=import_line, pool=pool) + "\nprint('{\"ok\": true}')\n"
