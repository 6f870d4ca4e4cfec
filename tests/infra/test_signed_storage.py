"""The signed-request path of run storage (``toolkit.presign`` + ``toolkit.storage_urls``) on each
store's emulator: moto (S3), fake-gcs-server (GCS), Azurite (Blob).

Each job here runs the real runner in its own process with every storage driver
made unimportable (``NO_STORAGE_DRIVERS``): it reaches storage only through the
requests the client signed. Per store: a single call reads its bundle and
writes its result; two workers race for a map's one item, which runs once; two
threads send the same signed conditional create at once, and exactly one wins.
"""

from __future__ import annotations

import datetime
import json

import boto3
import pytest
from azure.storage.blob import BlobServiceClient

from tests.emulators.aws import REGION, aws, aws_emulator  # noqa: F401 - fixtures
from tests.emulators.azure import Azurite, azurite  # noqa: F401 - fixture
from tests.emulators.gcp import GatedGcs, fake_gcs, gcs_with_credentials, google_apis  # noqa: F401 - fixtures
from tests.infra.storage_roundtrip import race_for_one_item, racing_creates, signed_create, signed_round_trip
from toolkit.presign import expiry_seconds, sign_run, signer_for
from toolkit.storage_urls import Http

KEY = "k" * 64


def _one_winner_each(outcomes: list[list[bool]]) -> None:
    assert all(sorted(won) == [False, True] for won in outcomes), outcomes


@pytest.mark.usefixtures("aws")
def test_s3_bundle_claim_and_result_through_presigned_requests(tmp_path) -> None:  # noqa: ANN001
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="signed-runs")
    url = "s3://signed-runs/pool/run-1"
    assert signed_round_trip(url, {}, KEY) == 42
    value, winner = race_for_one_item(f"{url}-map", {}, KEY, tmp_path)
    assert value == 42 and winner in ("worker-a", "worker-b")
    signer = signer_for(url, {})
    assert signer is not None
    _one_winner_each(racing_creates(signed_create(signer)))


def test_azure_bundle_claim_and_result_through_sas_requests(azurite: Azurite, tmp_path) -> None:  # noqa: ANN001,F811
    connection = azurite.connection_string()
    BlobServiceClient.from_connection_string(connection).create_container("signed-runs")
    options = {"connection_string": connection}
    url = "az://signed-runs/pool/run-1"
    assert signed_round_trip(url, options, KEY) == 42
    value, winner = race_for_one_item(f"{url}-map", options, KEY, tmp_path)
    assert value == 42 and winner in ("worker-a", "worker-b")
    signer = signer_for(url, options)
    assert signer is not None
    _one_winner_each(racing_creates(signed_create(signer)))


def test_azure_sas_grants_one_blob_only(azurite: Azurite) -> None:  # noqa: F811
    """A signed request names its blob: the same signature on another blob is refused by Azurite."""
    connection = azurite.connection_string()
    BlobServiceClient.from_connection_string(connection).create_container("sas-scope")
    signer = signer_for("az://sas-scope/run-2", {"connection_string": connection})
    assert signer is not None
    method, url, headers = signer.sign("PUT", "results/0.tkb", 600)
    status, _ = Http().send([method, url.replace("results/0.tkb", "results/1.tkb"), headers], b"forged")
    assert status == 403


def _service_account(tmp_path) -> dict[str, str]:  # noqa: ANN001
    """A service account key made for the test (fake-gcs-server takes any signature; the signing code is real)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {
        "type": "service_account",
        "project_id": "proj-1",
        "private_key_id": "test",
        "private_key": pem.decode(),
        "client_email": "runs@proj-1.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path / "key.json"
    path.write_text(json.dumps(info))
    return {"path": str(path)}


def test_gcs_signed_requests_carry_bundle_and_result_and_claims_keep_the_fsspec_path(
    gcs_with_credentials: GatedGcs, tmp_path  # noqa: ANN001,F811
) -> None:
    """Storage that, as Cloud Storage does, takes only the metadata server's token (the client, gcsfs) or a URL
    whose V4 signature verifies against the run's service account key (the job). fake-gcs-server ignores
    ``x-goog-if-generation-match`` on a signed-URL upload, so a claim through a signed URL cannot be shown
    exclusive: maps whose workers claim keep gcsfs (and its conditional create, raced here too); single calls and
    indexed maps take the signed path."""
    gcs = gcs_with_credentials
    gcs.fake.create_bucket("signed-runs")
    key_file = _service_account(tmp_path)["path"]
    gcs.trust(key_file)
    options = {**gcs.storage_options, "token": key_file}
    url = "gs://signed-runs/pool/run-1"
    assert signed_round_trip(url, gcs.storage_options, KEY, sign_options=options) == 42
    assert {method for method, _path in gcs.admitted("signed")} == {"GET", "PUT"}  # the job: bundle in, result out
    assert sign_run(url, options, KEY, items=1) is None  # claiming workers: the fsspec path
    assert sign_run(url, options, KEY, items=1, claims=False) is not None  # tasks that run their index
    signer = signer_for(url, options)
    assert signer is not None and not signer.conditional_create
    request = signer.sign("PUT", "claims/0", 600, create_only=True)
    assert request[2] == {"x-goog-if-generation-match": "0"}
    answers = [Http().send(request, body)[0] for body in (b"a", b"b")]
    assert answers == [200, 200], "fake-gcs-server now honours the precondition: verify and turn conditional_create on"
    forged = [request[0], request[1].replace("claims/0", "claims/1"), request[2]]
    assert Http().send(forged, b"forged")[0] == 403  # a signature names its object
    assert gcs.refused() == [("PUT", "/signed-runs/pool/run-1/claims/1", "the signature does not match the request")]

    import gcsfs

    fs = gcsfs.GCSFileSystem(**gcs.storage_options, skip_instance_cache=True)  # as the job: its metadata server's token

    def create(name: str, body: bytes) -> bool:
        try:
            with fs.open(f"signed-runs/pool/{name}", "xb") as handle:
                handle.write(body)
        except FileExistsError:
            return False
        return True

    _one_winner_each(racing_creates(create))
    assert len(gcs.refused()) == 1


def test_signatures_last_the_calls_timeout_and_a_margin_at_most_a_week() -> None:
    assert expiry_seconds(None) == 7 * 24 * 3600
    assert expiry_seconds(600) == 600 + 3600
    assert expiry_seconds(30 * 24 * 3600) == 7 * 24 * 3600
    assert datetime.timedelta(seconds=expiry_seconds(None)).days == 7


def test_no_signer_for_local_storage_or_anonymous_access() -> None:
    assert signer_for("/tmp/runs/1", {}) is None
    assert signer_for("file:///tmp/runs/1", {}) is None
    assert signer_for("s3://bucket/p", {"anon": True}) is None
    assert signer_for("gs://bucket/p", {"token": "anon"}) is None
    assert sign_run("/tmp/runs/1", {}, KEY) is None
