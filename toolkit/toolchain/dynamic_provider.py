"""The ``pulumi-resource-pulumi-python`` plugin: the SDK's dynamic provider, started lean.

The engine starts this plugin in every ``up`` and every ``destroy`` of a stack
with dynamic resources (every run stack has them: its storage, the process
job), waits for it to print its port, and when it is done interrupts the
plugin's process group and waits for it to exit. Start and exit are therefore
on the critical path of every run, twice. What keeps them short:

* The SDK's own server (``python -m pulumi.dynamic``) runs unchanged, through
  ``runpy`` from its compiled bytecode; the shim runs this module by name, so
  it too comes from bytecode.
* ``pulumi.automation`` -- a fifth of ``import pulumi``, and nothing a provider
  uses -- runs its ``__init__`` only when a name of it is first looked up
  (``defer``), so code that does use it still gets the real module.
* The toolkit's providers live in ``toolkit/providers/``, whose modules import
  the standard library and ``pulumi.dynamic`` only; unpickling one does not
  pull in pydantic, the targets or fsspec.
* SIGINT -- the engine is done with the plugin: every call has been answered --
  ends the process at once (``os._exit``): no server shutdown, thread joins or
  interpreter finalisation for the engine to wait for, and no five-second
  grace when the signal lands on a gRPC thread (see ``main``). Job processes a
  provider started run in sessions of their own and are not affected.

The shim falls back to ``python -m pulumi.dynamic`` when the interpreter has
no toolkit (a project's own virtualenv), so every dynamic provider still runs.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import signal
import sys
import threading
import traceback
import types


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs when one of its names is first looked up.

    Unlike ``importlib.util.LazyLoader`` (whose module loads on *any* attribute
    access, including the import system's own look-up of ``__spec__`` that every
    ``import`` statement performs), only a missing attribute triggers the load:
    ``__spec__``, ``__path__`` and submodule imports work without it.
    """

    def __getattr__(self, name: str) -> object:
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        self.__class__ = types.ModuleType  # from now on, plain module look-ups
        spec.loader.exec_module(self)
        return getattr(self, name)


def defer(name: str) -> None:
    """Register package ``name`` (e.g. ``pulumi.automation``) to run its ``__init__`` on first use.

    Its parent is located without being imported (``find_spec`` of a top-level
    name), so importing the parent afterwards binds the deferred package.
    """
    parent, _, child = name.rpartition(".")
    parent_spec = importlib.util.find_spec(parent)
    if name in sys.modules or parent_spec is None or not parent_spec.submodule_search_locations:
        return
    directory = os.path.join(parent_spec.submodule_search_locations[0], child)
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory]
    )
    if spec is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _DeferredPackage
    sys.modules[name] = module


def main() -> None:
    """Serve in a thread; end the process the moment SIGINT arrives or the server stops.

    The server runs off the main thread because a signal handler only runs when
    the main thread wakes, and a SIGINT the kernel hands to one of gRPC's threads
    would not wake a main thread blocked in the server's ``Event().wait()`` (the
    engine would then sit out its five-second grace). The main thread waits on
    the signal wake-up pipe instead, which the interpreter writes to from
    whichever thread received the signal.
    """
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGINT, lambda _signum, _frame: None)  # a handler, so the wake-up pipe is written
    defer("pulumi.automation")
    failed = []

    def serve() -> None:
        try:
            runpy.run_module("pulumi.dynamic", run_name="__main__", alter_sys=True)
        except BaseException:  # noqa: BLE001 - reported here, before the main thread ends the process
            traceback.print_exc()
            failed.append(True)
        finally:
            os.write(wake_write, b"\0")

    threading.Thread(target=serve, name="provider", daemon=True).start()
    os.read(wake_read, 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    main()
