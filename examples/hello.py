"""Hello, toolkit: one function, one ephemeral Pulumi stack, one result.

Runs on the built-in ``local-process`` pool: the stack's "bucket" is a private
run directory, its "job" a local subprocess, its state a local file backend.
Nothing needs a cloud account.

    python examples/hello.py
"""

import platform

from toolkit import process


@process(env={"GREETING": "Hello"})
def greet(name: str) -> str:
    import os

    print(f"running in process {os.getpid()} on {platform.node()}")
    return f"{os.environ['GREETING']}, {name}!"


if __name__ == "__main__":
    plan = greet.preview("world")
    print(plan)  # what the call below will create, without creating it
    print(greet("world"))  # stack up -> run -> result -> stack destroyed
