"""Job side (Vertex AI): put Secret Manager values into the environment, then exec a command.

A Vertex AI CustomJob's container env is plain text in the job's API
resource, readable by anyone who may list jobs. So the run key and secret env
values are not put there: the job spec carries only secret *version names*,
and this module resolves them with the job's own service account (token from
the metadata server) right before it execs the runner::

    python3 -m toolkit.gcp_secret_env TOOLKIT_RUN_KEY=projects/P/secrets/S/versions/1 -- python3 -m toolkit.runner ...

Standard library only, like the runner, so job images stay small.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request

METADATA_HOST_ENV = "GCE_METADATA_HOST"
"""Same variable google-auth honours; set in tests to a local fake."""
SECRET_MANAGER_ENDPOINT_ENV = "TOOLKIT_SECRET_MANAGER_ENDPOINT"
TIMEOUT = 30.0


def _get_json(url: str, headers: dict[str, str]) -> dict:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return json.loads(response.read())


def access_token() -> str:
    """The job's service account token, from the metadata server."""
    host = os.environ.get(METADATA_HOST_ENV) or "metadata.google.internal"
    url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
    return _get_json(url, {"Metadata-Flavor": "Google"})["access_token"]


def access_secret(version: str, token: str) -> str:
    """The UTF-8 payload of one secret version (``projects/P/secrets/S/versions/V``)."""
    base = (os.environ.get(SECRET_MANAGER_ENDPOINT_ENV) or "https://secretmanager.googleapis.com").rstrip("/")
    body = _get_json(f"{base}/v1/{version}:access", {"Authorization": f"Bearer {token}"})
    return base64.b64decode(body["payload"]["data"]).decode("utf-8")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args or args.index("--") == len(args) - 1:
        print("usage: python -m toolkit.gcp_secret_env NAME=SECRET_VERSION ... -- COMMAND ...", file=sys.stderr)
        return 2
    split = args.index("--")
    pairs, command = args[:split], args[split + 1 :]
    env = dict(os.environ)
    token: str | None = None
    for pair in pairs:
        name, _, version = pair.partition("=")
        try:
            token = token or access_token()
            env[name] = access_secret(version, token)
        except (OSError, KeyError, ValueError, urllib.error.URLError) as exc:
            print(
                f"toolkit: could not read {name} from Secret Manager ({version}): {exc}. The job's service "
                "account needs roles/secretmanager.secretAccessor on that secret",
                file=sys.stderr,
            )
            return 3
    sys.stdout.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"toolkit: could not start {command[0]!r}: {exc}. Check the job's image", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
