"""The Google family's primitives (cloud_run, vertex_ai): ``platform`` (bucket, identity, secrets,
Artifact Registry pulls) and ``logs`` (job output from Cloud Logging)."""
