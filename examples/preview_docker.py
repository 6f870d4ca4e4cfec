"""Preview: the infrastructure a call would create, as a table and as JSON, creating nothing.

Shows a container job on the built-in ``local-docker`` pool with a memory
limit and a secret env value (masked in the plan, encrypted in state).

    python examples/preview_docker.py
"""

import toolkit
from toolkit import docker


@docker(mem_limit="512m", cpus=1.0)
def train(epochs: int) -> float:
    return 0.1 * epochs


if __name__ == "__main__":
    plan = train.with_options(env={"API_TOKEN": toolkit.secret("not-shown-anywhere")}).preview(3)
    print(plan)
    print(plan.to_json()[:400], "...")
