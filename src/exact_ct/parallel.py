"""Run per-study work on a local process pool by default, or on a Dask cluster when one is named."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

DASK_ENV = "EXACT_DASK_ADDRESS"


def map_ordered(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    dask_address: str | None = None,
    desc: str = "",
    progress: bool = True,
) -> Iterator[R]:
    """Apply ``fn`` to each item, yielding results in input order, with a progress bar.

    ``workers <= 1`` runs in-process (easiest to debug, deterministic); ``dask_address`` (or the
    ``EXACT_DASK_ADDRESS`` environment variable) sends the work to a ``dask.distributed`` scheduler.
    Results are yielded as they arrive in order, so a caller can stream them to disk and keep memory
    flat; ``items`` may be a generator (it is consumed lazily, except by Dask, which needs a list), and at
    most ``2 * workers`` items are in flight at once.
    """
    address = dask_address or os.environ.get(DASK_ENV) or None
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="study", leave=False)
    try:
        if address:
            yield from _map_dask(fn, list(items), address, bar)
        elif workers <= 1:
            for item in items:
                yield fn(item)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                window = 2 * workers
                futures: list[Any] = []
                it = iter(items)
                for item in it:
                    futures.append(pool.submit(fn, item))
                    if len(futures) >= window:
                        break
                while futures:
                    fut = futures.pop(0)
                    result = fut.result()
                    nxt = next(it, _SENTINEL)
                    if nxt is not _SENTINEL:
                        futures.append(pool.submit(fn, nxt))
                    bar.update(1)
                    yield result
    finally:
        bar.close()


_SENTINEL: Any = object()


def _map_dask(fn: Callable[[T], R], items: list[T], address: str, bar: Any) -> Iterator[R]:
    from distributed import Client

    with Client(address) as client:
        futures = client.map(fn, items, pure=False)
        for fut in futures:
            result = fut.result()
            bar.update(1)
            yield result
