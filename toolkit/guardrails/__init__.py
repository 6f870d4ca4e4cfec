"""Guardrails a platform team sets on a pool, enforced on every call.

- ``slots``: ``max_concurrent_runs``, counted in the pool's state backend so
  it holds across processes and machines.
- ``history``: the audit trail of finished runs, kept in the backend.
- ``guard``: the one object a run's lifecycle calls at each of these points.

What a pool declares sits below the engine, which applies it to every stack:
its policy packs (``toolkit.policy_packs``: run at preview and up of each run
stack; a mandatory violation stops the call before anything exists) and its
secrets provider (``toolkit.settings.secrets_provider``). The backend's own
records, shared by slots, history and gc, are ``toolkit.backend_store``.
"""
