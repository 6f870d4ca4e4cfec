"""Issue 29's candidates, each measured alternating with the path it would replace (bench/candidates.py --issue 29).

* (a) the ``toolkit`` resource provider: the run's own resources (run storage,
  the process job) as resources of a named provider, served by the client and
  attached to every CLI process (``PULUMI_DEBUG_PROVIDERS=toolkit:PORT``), against
  the same resources as dynamic resources (a ``pulumi-resource-pulumi-python``
  plugin per ``up`` and per ``destroy``: the path before issue 29), and against
  the named provider started as the plugin ``pulumi-resource-toolkit``.
* (c) the secrets key kept by the client (toolkit/toolchain/stack_key.py: Pulumi's cloud
  secrets manager on a Vault-transit-shaped service on loopback) against the
  passphrase manager, which derives its key in every CLI process.
* (b) the engine started before it is needed: ``pulumi up`` started with a
  program that waits, and the call's program handed over once the engine asks
  for it; measured as the ``up`` that remains after the hand-over, against a
  whole ``up``. And ``destroy`` started while the job runs, held by a gate
  resource (a ``toolkit`` resource that depends on every other one, whose
  delete waits for the client), measured as the teardown after the result.
* throughput at 10 concurrent ``@process`` and ``@docker`` calls, each kept
  candidate against the path before issue 29, alternating.

CPU is reported for the CLI processes with the plugins they waited for
(children) and for the client itself (where a resident provider does its work).
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import pulumi  # noqa: E402
import pulumi.dynamic  # noqa: E402

from toolkit.providers import server  # noqa: E402

Variant = Callable[[], contextlib.AbstractContextManager[Any]]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cpu() -> tuple[float, float]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime


# -- (a): the path before issue 29, as dynamic resources ------------------------------------------


class _Dynamic(pulumi.dynamic.Resource):
    """Turns a ``toolkit`` resource's registration into the dynamic resource it was before issue 29."""

    def __init__(self, token: str, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(server.PROVIDERS[token], name, props, opts)


def _dynamic_classes() -> dict[str, type]:
    from toolkit.infra.resources import LocalProcess, RunStorage

    class DynamicRunStorage(RunStorage, _Dynamic, module="toolkit", name="RunStorage"):  # type: ignore[call-arg]
        pass

    class DynamicLocalProcess(LocalProcess, _Dynamic, module="toolkit", name="LocalProcess"):  # type: ignore[call-arg]
        pass

    return {"RunStorage": DynamicRunStorage, "LocalProcess": DynamicLocalProcess}


@contextmanager
def dynamic_resources() -> Iterator[None]:
    """The run's storage and process job as dynamic resources, as every run had them before issue 29."""
    import toolkit.infra.flow as flow
    import toolkit.targets.process as process

    classes = _dynamic_classes()
    saved = (flow.RunStorage, process.LocalProcess)
    flow.RunStorage, process.LocalProcess = classes["RunStorage"], classes["LocalProcess"]
    try:
        yield
    finally:
        flow.RunStorage, process.LocalProcess = saved


@contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def plugin_passphrase() -> contextlib.AbstractContextManager[None]:
    """The named provider, started by the engine as ``pulumi-resource-toolkit`` in every CLI process."""
    return environment(TOOLKIT_RESIDENT_PROVIDER="0", TOOLKIT_STACK_KEY="0")


@contextmanager
def resident() -> Iterator[None]:
    """What the toolkit does now: the resident provider and the kept key."""
    yield


# -- (c): the key kept by the client -------------------------------------------------------------


def passphrase() -> contextlib.AbstractContextManager[None]:
    """Run stacks on the passphrase secrets manager: the key derived in every CLI process."""
    return environment(TOOLKIT_STACK_KEY="0")


@contextmanager
def before() -> Iterator[None]:
    """The path before issue 29: dynamic resources and the passphrase."""
    with dynamic_resources(), passphrase():
        yield


@contextmanager
def resident_passphrase() -> Iterator[None]:
    with passphrase():
        yield


# -- (b) for destroy: started while the job runs, held at a gate ---------------------------------


class GateProvider(pulumi.dynamic.ResourceProvider):
    """A ``toolkit:index:Gate``'s delete waits until the client releases the stack (``holds``)."""

    holds: dict[str, threading.Event] = {}

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=props["stack"], outs=props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        hold = self.holds.get(props["stack"])
        if hold is not None:
            hold.wait(300)


@contextmanager
def early_destroy() -> Iterator[None]:
    """``destroy`` started as soon as ``up`` returns, its first delete (a gate that depends on every other
    resource of the run) held until the client tears the run down."""
    from toolkit.engine import RunStack

    server.PROVIDERS[server.resource_token("Gate")] = GateProvider()
    real_init, real_up, real_destroy = RunStack.__init__, RunStack.up, RunStack.destroy_and_remove

    def init(stack: RunStack, run_id: str, backend_url: str, program: Callable[[], None], *args: Any, **kwargs: Any):
        def gated() -> None:
            resources: list[pulumi.Resource] = []

            def collect(args: pulumi.ResourceTransformationArgs) -> None:
                resources.append(args.resource)

            pulumi.runtime.register_stack_transformation(collect)
            program()
            pulumi.CustomResource(server.resource_token("Gate"), "teardown-gate", {"stack": stack.name},
                                  pulumi.ResourceOptions(depends_on=list(resources)))

        real_init(stack, run_id, backend_url, gated, *args, **kwargs)

    def up(stack: RunStack) -> dict[str, Any]:
        outputs = real_up(stack)
        hold = GateProvider.holds[stack.name] = threading.Event()
        failures: list[BaseException] = []

        def destroy() -> None:
            try:
                stack.destroy_once()
            except BaseException as exc:  # noqa: BLE001 - the teardown falls back to a destroy of its own
                failures.append(exc)

        thread = threading.Thread(target=destroy, daemon=True)
        thread.start()
        stack._early = (hold, thread, failures)  # type: ignore[attr-defined]
        return outputs

    def destroy_and_remove(stack: RunStack, attempts: int = 5) -> None:
        early = getattr(stack, "_early", None)
        if early is None:
            return real_destroy(stack, attempts)
        hold, thread, failures = early
        hold.set()
        thread.join()
        GateProvider.holds.pop(stack.name, None)
        if failures:
            return real_destroy(stack, attempts)
        stack.close()

    RunStack.__init__, RunStack.up, RunStack.destroy_and_remove = init, up, destroy_and_remove
    try:
        yield
    finally:
        RunStack.__init__, RunStack.up, RunStack.destroy_and_remove = real_init, real_up, real_destroy
        del server.PROVIDERS[server.resource_token("Gate")]


# -- measuring ------------------------------------------------------------------------------------


def one_call(function: Any, variant: Variant) -> dict[str, float]:
    """One call of ``function`` (which returns 2) under ``variant``: submit→result, teardown after the result,
    CPU of the CLI processes reaped meanwhile and of the client."""
    with variant():
        children, own = _cpu()
        started = time.perf_counter()
        future = function.submit()
        assert future.result(timeout=300) == 2
        returned = time.perf_counter()
        future.wait_teardown()
        ended = time.perf_counter()
        children_after, own_after = _cpu()
        if future.teardown_error is not None:
            raise future.teardown_error
    return {"latency": returned - started, "teardown": ended - returned, "cli_cpu": children_after - children,
            "client_cpu": own_after - own}


def calls(function: Any, variants: dict[str, Variant], repeats: int) -> dict[str, dict[str, float]]:
    """Submit→result, teardown and CPU medians of ``function`` under each variant, alternating."""
    samples: dict[str, dict[str, list[float]]] = {
        name: {"latency": [], "teardown": [], "cli_cpu": [], "client_cpu": []} for name in variants
    }
    for _ in range(repeats):
        for name, variant in variants.items():
            for key, value in one_call(function, variant).items():
                samples[name][key].append(value)
    return {name: {key: _median(values) for key, values in measured.items()} for name, measured in samples.items()}


def throughput(function: Any, variants: dict[str, Variant], concurrent: int, rounds: int) -> dict[str, float]:
    """Runs per minute with ``concurrent`` calls submitted at once until all are torn down, alternating."""
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            with variant():
                started = time.perf_counter()
                futures = [function.submit() for _ in range(concurrent)]
                assert [future.result(timeout=600) for future in futures] == [2] * concurrent
                for future in futures:
                    future.wait_teardown()
                walls[name].append(time.perf_counter() - started)
                errors = [future.teardown_error for future in futures if future.teardown_error is not None]
                if errors:
                    raise errors[0]
    return {name: 60 * concurrent / _median(values) for name, values in walls.items()}


def prestarted_up(repeats: int) -> dict[str, float]:
    """``up`` of a ``@process`` call's stack: whole, against what remains once the engine, started
    ahead, is handed the program. Alternating; each stack destroyed after its measurement."""
    from toolkit.engine import RunStack, RunTag
    from toolkit.preparation import prepare
    from toolkit.progress import Progress

    def trivial() -> int:
        return 2

    whole, remaining = [], []
    for _ in range(repeats):
        for ahead in (False, True):
            prepared = prepare(trivial, (), {}, "local-process", [])
            asked, handed = threading.Event(), threading.Event()

            def program() -> None:
                asked.set()
                handed.wait()
                prepared.target.program(prepared.context)

            tag = RunTag(pool="local-process", function="trivial", owner="bench", created=time.time(), ttl=3600)
            stack = RunStack(prepared.run_id, prepared.backend_url, program, Progress(prepared.run_id, show=False),
                             tag=tag, secrets_provider=prepared.secrets_provider)
            result: dict[str, Any] = {}
            upper = threading.Thread(target=lambda: result.setdefault("outputs", stack.up()))
            started = time.perf_counter()
            upper.start()
            if ahead:
                asked.wait(120)
                time.sleep(0.2)  # an engine waiting, as one started ahead would be
                started = time.perf_counter()
            handed.set()
            upper.join()
            (remaining if ahead else whole).append(time.perf_counter() - started)
            stack.destroy_and_remove()
            prepared.discard_bundle()
    return {"whole up": _median(whole), "up after hand-over": _median(remaining)}


def _load() -> float:
    return os.getloadavg()[0]


def measure(repeats: int) -> dict:
    import toolkit
    from tests.leaks import leftovers

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "repeats": repeats, "load_start": _load()}

    @toolkit.process
    def in_process() -> int:
        return 2

    @toolkit.docker
    def in_docker() -> int:
        return 2

    in_process(), in_docker()  # warm-up
    variants: dict[str, Variant] = {"before": before, "plugin, passphrase": plugin_passphrase,
                                    "resident, passphrase": resident_passphrase, "resident + kept key": resident}
    results["process"] = calls(in_process, variants, repeats)
    results["docker"] = calls(in_docker, variants, repeats)
    results["prestarted up"] = prestarted_up(repeats)
    results["early destroy"] = {
        "process": calls(in_process, {"now": resident, "now + early destroy": early_destroy}, repeats),
        "docker": calls(in_docker, {"now": resident, "now + early destroy": early_destroy}, repeats),
    }
    kept = {"before": before, "resident + kept key": resident}
    results["throughput process 10"] = throughput(in_process, kept, 10, 2)
    results["throughput docker 10"] = throughput(in_docker, kept, 10, 2)
    results["left behind"] = {kind: names for kind, names in leftovers().items() if names}
    results["load_end"] = _load()
    return results


def _row(figures: dict[str, float]) -> str:
    return (f"{figures['latency']:.2f} s / {figures['teardown']:.2f} s / CLI {figures['cli_cpu']:.2f} + client "
            f"{figures['client_cpu']:.2f} CPU-s")


def render(results: dict) -> str:
    lines = [
        "## Tried for issue 29: no plugin start, no key derivation and no CLI start on a call's critical path",
        "",
        f"`bench/candidates.py --issue 29 --repeats {results['repeats']}`, {results['date']} (1-minute load "
        f"average {results['load_start']:.1f} at the start, {results['load_end']:.1f} at the end, 2 cores). "
        "Medians; the variants of each row alternate in the same run. Per call: submit→result / teardown after "
        "the result / CPU of the CLI processes with their plugins + of the client (where a resident provider works).",
        "",
        "| target | variant | per call |",
        "|---|---|---|",
    ]
    for target in ("process", "docker"):
        for variant, figures in results[target].items():
            lines.append(f"| {target} | {variant} | {_row(figures)} |")
    up = results["prestarted up"]
    lines += [
        "",
        f"Engine started ahead (`@process`): whole `up` {up['whole up']:.2f} s, `up` after the hand-over "
        f"{up['up after hand-over']:.2f} s.",
        "",
        "Destroy started while the job runs, held at a gate until the teardown (same per-call columns):",
        "",
        "| target | variant | per call |",
        "|---|---|---|",
        *(f"| {target} | {variant} | {_row(figures)} |"
          for target, variants in results["early destroy"].items() for variant, figures in variants.items()),
        "",
        "| throughput, 10 concurrent | " + " | ".join(results["throughput process 10"]) + " |",
        "|---|" + "---|" * len(results["throughput process 10"]),
    ]
    for target in ("process", "docker"):
        rates = results[f"throughput {target} 10"]
        lines.append(f"| {target} (runs/min) | " + " | ".join(f"{rate:.0f}" for rate in rates.values()) + " |")
    left = results["left behind"]
    lines += ["", f"Left behind after all of it (tests/leaks.py): {left or 'nothing'}.", ""]
    lines += _verdicts(results)
    return "\n".join(lines)


def render_section(saved: dict, sections: dict[str, dict]) -> list[str]:
    """Section ``candidates29`` of bench/results.md (bench/report.py)."""
    return render(saved["data"]).splitlines()


def _verdicts(results: dict) -> list[str]:
    process, docker = results["process"], results["docker"]
    before, plugin, resident_pp, now = (process[name] for name in
                                        ("before", "plugin, passphrase", "resident, passphrase", "resident + kept key"))
    up, early = results["prestarted up"], results["early destroy"]["process"]
    rates = results["throughput process 10"]
    return [
        "| candidate | kept? | why |",
        "|---|---|---|",
        f"| (a) `toolkit` provider served by the client, attached with `PULUMI_DEBUG_PROVIDERS` | yes | `@process` "
        f"{resident_pp['latency']:.2f} s vs {before['latency']:.2f} s before, teardown {resident_pp['teardown']:.2f} s vs "
        f"{before['teardown']:.2f} s, CLI CPU {resident_pp['cli_cpu']:.2f} vs {before['cli_cpu']:.2f} CPU-s per run "
        "(no plugin per `up`/`destroy`); nothing per process (Configure takes no settings, tests/test_resident_provider.py "
        "runs 20 pools at once); only its own user's engines may call it |",
        f"| (a) the same provider as the plugin `pulumi-resource-toolkit` | as the fallback | `@process` "
        f"{plugin['latency']:.2f} s, teardown {plugin['teardown']:.2f} s: no faster than the dynamic plugin, but what "
        "the engine starts when no resident one is attached (`toolkit gc` of a dead client's stack, a hand-run "
        "`pulumi destroy`) |",
        f"| (c) the key kept by the client (Pulumi's `hashivault://` manager on a loopback key service, key derived "
        f"once per client from the passphrase) | yes | `@process` {now['latency']:.2f} s vs {resident_pp['latency']:.2f} "
        f"s with the passphrase, teardown {now['teardown']:.2f} s vs {resident_pp['teardown']:.2f} s, CLI CPU "
        f"{now['cli_cpu']:.2f} vs {resident_pp['cli_cpu']:.2f} CPU-s per run; `@docker` {docker['resident + kept key']['latency']:.2f} "
        f"s vs {docker['resident, passphrase']['latency']:.2f} s. The state is as hard to open without the passphrase "
        "as before (same PBKDF2), tests/test_secret_hygiene.py unchanged but for the storage's type name |",
        f"| (b) `pulumi up` started ahead, handed the next call's program | no (measured, not built) | the `up` left "
        f"after the hand-over: {up['up after hand-over']:.2f} s vs {up['whole up']:.2f} s whole; but the run id must "
        "exist before the call is rendered (it names the stack, the run directory and the run's record), and each "
        "client would keep an idle CLI per pool whether or not another call comes; the largest cut left, not built "
        "in this round |",
        f"| (b) `destroy` started while the job runs, held at a gate resource until the teardown | no | `@process` "
        f"teardown {early['now + early destroy']['teardown']:.2f} s vs {early['now']['teardown']:.2f} s, but "
        f"submit→result {early['now + early destroy']['latency']:.2f} s vs {early['now']['latency']:.2f} s: the "
        "early CLI competes with the job and the result for the CPU, and it keeps a CLI per running job |",
        f"| throughput at 10 concurrent `@process` | | {rates['resident + kept key']:.0f} runs/min now vs "
        f"{rates['before']:.0f} before, same run |",
        "",
    ]
