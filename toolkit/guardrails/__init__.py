"""Guardrails a platform team sets on a pool, enforced on every call.

- ``policy``: Pulumi policy packs run at preview and up of each run stack;
  a mandatory violation stops the call before anything exists.
- ``slots``: ``max_concurrent_runs``, counted in the pool's state backend so
  it holds across processes and machines.
- ``secrets``: which secrets provider encrypts the run stacks' state.
- ``history``: the audit trail of finished runs, kept in the backend.
- ``store``: the backend's storage as a filesystem, shared by slots and history.
- ``guard``: the one object a run's lifecycle calls at each of these points.
"""
