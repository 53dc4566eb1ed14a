"""Run per-study work on a local process pool or a Dask cluster (params `parallel`); launch training on torchrun."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from exact_ct.config import PositiveInt, section
from exact_ct.logs import progress_bar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: a scheduler address here sends per-study work to that Dask cluster, whatever params.yaml says
DASK_ENV = "EXACT_DASK_ADDRESS"


@dataclass(frozen=True)
class ParallelConfig:
    """The ``parallel`` section of params.yaml: where per-study work runs, how many processes train.

    Attributes:
        backend: ``processes``: each stage's own ``workers`` processes on this machine; ``dask``: the
            stages ingest, parse_reports, pseudo_masks and build_dataset send their per-study work to a
            ``dask.distributed`` cluster. Outputs are byte-identical either way, so these keys are not
            DVC params of those stages (switching reruns nothing).
        dask_scheduler: address of a running scheduler (``tcp://host:8786``); empty: each stage run starts
            a local cluster of ``dask_workers`` processes and stops it at the end.
        dask_workers: worker processes of that local cluster (one thread each).
        train_nproc_per_node: training processes on this machine (one per GPU); above 1 the train stage
            relaunches itself under ``torchrun`` (DistributedDataParallel). It changes the result (the
            effective batch), so it is a DVC param of the train stage.
    """

    backend: Literal["processes", "dask"] = "processes"
    dask_scheduler: str = ""
    dask_workers: PositiveInt = 2
    train_nproc_per_node: PositiveInt = 1


def load_parallel(params: str | os.PathLike[str]) -> ParallelConfig:
    """The ``parallel`` section of a params file (defaults when it has none)."""
    return section(ParallelConfig, "parallel", params)


# The Dask client of the running stage (``use_backend``); map_ordered sends work to it.
_ACTIVE: Any = None


@contextlib.contextmanager
def use_backend(cfg: ParallelConfig) -> Iterator[None]:
    """Within this block, ``map_ordered`` (and report labelling) run on the backend ``cfg`` names.

    ``dask`` with a scheduler address connects to that cluster and checks that its workers can do the
    work (see :func:`check_workers`); without one, a local cluster of ``dask_workers`` processes is
    started for the block. ``EXACT_DASK_ADDRESS`` in the environment overrides both.
    """
    global _ACTIVE
    address = os.environ.get(DASK_ENV) or (cfg.dask_scheduler if cfg.backend == "dask" else "")
    if not address and cfg.backend != "dask":
        yield
        return
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        # the cluster's start and stop (nannies, scheduler) log at INFO: one line per event and worker
        dask_log = logging.getLogger("distributed")
        stack.callback(dask_log.setLevel, dask_log.level)
        dask_log.setLevel(max(logging.WARNING, dask_log.getEffectiveLevel()))
        if address:
            client = stack.enter_context(Client(address))
            check_workers(client)
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=cfg.dask_workers, threads_per_worker=1, processes=True, dashboard_address=None
                )
            )
            client = stack.enter_context(Client(cluster))
        log.info("per-study work on Dask: %s, %d workers", client.scheduler.address, len(client.nthreads()))
        previous, _ACTIVE = _ACTIVE, client
        try:
            yield
        finally:
            _ACTIVE = previous


def backend_from_params(params: str | os.PathLike[str]) -> contextlib.AbstractContextManager[None]:
    """:func:`use_backend` with the ``parallel`` section of a params file (what the stages call)."""
    return use_backend(load_parallel(params))


def current_dask_address() -> str | None:
    """The scheduler per-study work goes to now, or None for the local process pool."""
    if os.environ.get(DASK_ENV):
        return os.environ[DASK_ENV]
    return str(_ACTIVE.scheduler.address) if _ACTIVE is not None else None


@functools.cache
def code_digest() -> str:
    """SHA-256 of this installed ``exact_ct`` package's Python sources (workers must run the same code)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _worker_facts() -> dict[str, str]:
    return {"cwd": os.path.realpath(os.getcwd()), "code": code_digest()}


def check_workers(client: Any) -> None:
    """Fail before any work unless every worker runs this ``exact_ct`` code in this working directory.

    Tasks carry paths relative to the repository root (as ``dvc.yaml`` writes them) and workers read
    inputs and write outputs themselves, so each worker must be started in the same directory, on a
    filesystem shared with this machine.
    """
    here = _worker_facts()
    try:
        facts: dict[str, dict[str, str]] = client.run(_worker_facts)
    except Exception as e:  # ModuleNotFoundError raised on a worker, re-raised here
        raise RuntimeError(
            f"Dask workers of {client.scheduler.address} cannot run exact_ct ({type(e).__name__}: {e}); "
            "start them from this project's environment"
        ) from None
    if not facts:
        raise RuntimeError(f"Dask scheduler {client.scheduler.address} has no workers")
    for worker, f in sorted(facts.items()):
        if f["cwd"] != here["cwd"]:
            raise RuntimeError(
                f"Dask worker {worker} runs in {f['cwd']}, not {here['cwd']}: start every worker from the "
                "repository root, at the same path on a shared filesystem"
            )
        if f["code"] != here["code"]:
            raise RuntimeError(
                f"Dask worker {worker} runs other exact_ct code than this checkout (source digest differs): "
                "restart the workers from this checkout's environment"
            )


def map_ordered(
    fn: Callable[..., R],
    items: Iterable[Any],
    *,
    workers: int = 1,
    dask_address: str | None = None,
    desc: str = "",
    progress: bool = True,
    shared: Any = None,
) -> Iterator[R]:
    """Apply ``fn`` to each item, yielding results in input order, with a progress bar.

    ``workers <= 1`` runs in-process (easiest to debug, deterministic). Inside :func:`use_backend` with
    Dask, or with ``dask_address`` or ``EXACT_DASK_ADDRESS`` given, the work goes to that
    ``dask.distributed`` cluster instead (``workers`` is then ignored). Results are yielded as they
    arrive in order, so a caller can stream them to disk and keep memory flat; ``items`` may be a
    generator, consumed lazily: at most ``2 * workers`` items (Dask: twice the cluster's threads) are in
    flight at once. ``shared``, when given, is passed as ``fn(shared, item)``; Dask sends it to each
    worker once instead of with every task.
    """
    address = dask_address or current_dask_address()
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    bar = progress_bar(desc, enabled=progress, total=total, unit="study")
    try:
        if address:
            extra = {} if shared is None else {"shared": shared}
            yield from map_dask(fn, items, address, bar, **extra)
            return
        call = fn if shared is None else functools.partial(fn, shared)
        if workers <= 1:
            for item in items:
                yield call(item)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                window = 2 * workers
                futures: list[Any] = []
                it = iter(items)
                for item in it:
                    futures.append(pool.submit(call, item))
                    if len(futures) >= window:
                        break
                while futures:
                    fut = futures.pop(0)
                    result = fut.result()
                    nxt = next(it, _SENTINEL)
                    if nxt is not _SENTINEL:
                        futures.append(pool.submit(call, nxt))
                    bar.update(1)
                    yield result
    finally:
        bar.close()


_SENTINEL: Any = object()


def map_dask(
    fn: Callable[..., R], items: Iterable[Any], address: str, bar: Any, shared: Any = _SENTINEL
) -> Iterator[R]:
    """``map_ordered`` on a Dask cluster: a window of submitted tasks, results in input order."""
    from distributed import Client

    with contextlib.ExitStack() as stack:
        active = _ACTIVE
        if active is not None and str(active.scheduler.address) == address:
            client = active
        else:
            client = stack.enter_context(Client(address))
        window = max(2, 2 * sum(client.nthreads().values()))
        head = () if shared is _SENTINEL else (client.scatter(shared, broadcast=True, hash=False),)
        it = iter(items)
        pending: deque[Any] = deque(
            client.submit(fn, *head, item, pure=False) for item in itertools.islice(it, window)
        )
        try:
            while pending:
                fut = pending.popleft()
                result = fut.result()
                fut.release()
                nxt = next(it, _SENTINEL)
                if nxt is not _SENTINEL:
                    pending.append(client.submit(fn, *head, nxt, pure=False))
                bar.update(1)
                yield result
        finally:
            if pending:
                client.cancel(list(pending))


def torchrun_relaunch(module: str, argv: Sequence[str], nproc_per_node: int) -> int | None:
    """Run ``python -m <module> <argv>`` under ``torchrun --standalone`` with ``nproc_per_node`` processes.

    Returns torchrun's exit status, or None (the caller goes on in this process) when one process is
    asked for or this process already is a torchrun worker (``LOCAL_RANK`` set). So a DVC stage keeps
    one command line whatever the number of processes. SIGTERM is passed on to torchrun, which stops its
    workers; a terminal's Ctrl-C reaches them directly.
    """
    if nproc_per_node <= 1 or "LOCAL_RANK" in os.environ:
        return None
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
        "-m", module, *argv,
    ]  # fmt: skip
    log.info("relaunching under torchrun: %d processes", nproc_per_node)
    proc = subprocess.Popen(cmd)
    previous = None
    if threading.current_thread() is threading.main_thread():  # dvc stops a stage with SIGTERM
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # a terminal's Ctrl-C reached torchrun too (same process group): let it stop its workers first
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        proc.terminate()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
