"""Environments: the packages, local code and files a call needs, delivered to its job.

A call's environment is (base image or interpreter, Python version, pinned
requirement set). Requirements come from the ``packages``, ``requirements``
and ``auto_packages`` job variables; they are resolved and downloaded as
wheels on the caller's side and installed with no index into an image
``toolkit-env:<hash>`` (container targets) or a virtualenv (process), built
once and kept in a long-lived Pulumi stack ``env-<hash>`` of the
``toolkit-envs`` project; for targets that do not share the caller's Docker
engine the same stack pushes it to the pool's registry and jobs pull it by digest. ``include_files`` travel as a signed archive next to
the bundle. Targets only receive the result: an image reference or an
interpreter (``RunContext.image`` / ``RunContext.python``).

Modules: ``variables`` (a call's environment settings, from the job variables
``toolkit.infra.variables`` declares for every target), ``detect`` (what the pickled
call imports), ``requirements`` (what is asked for, and from where), ``base``
(the base image's or interpreter's Python, platform and packages), ``resolve``
(pip: resolution and wheel download), ``spec`` (the environment and its hash),
``index`` (the local cache that keeps a built environment's per-call cost to
file reads), ``stack`` (the environment stacks: image build and push,
virtualenv, ls/prune), ``files`` (the
include_files archive), ``events`` (build progress) and ``lifecycle`` (plan and
ensure, called by ``toolkit.preparation``). Where images for remote targets are
pushed, and with which credentials, is the pool's ``image_registry``
(``toolkit.infra.image_registry``, which targets read too).
This package is client side only: the job never imports it.
"""
