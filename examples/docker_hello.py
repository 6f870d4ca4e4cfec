"""The same call in a container: the real pulumi-docker provider on the local Docker engine.

The job runs as an unprivileged user with all capabilities dropped and a
read-only root filesystem; its output streams back here.

    python examples/docker_hello.py
"""

from toolkit import docker


@docker(mem_limit="256m")
def where_am_i() -> dict:
    import os
    import socket

    print("inside the container")
    return {"hostname": socket.gethostname(), "uid": os.getuid()}


if __name__ == "__main__":
    print(where_am_i())
