"""Where worker metrics are counted: process memory, or per-process files for ``dramatiq --processes N``.

* :class:`MemorySink`: prometheus_client's own metric objects in a private
  registry: one process, or a process under an application server that
  manages ``PROMETHEUS_MULTIPROC_DIR`` itself (prometheus_client then writes
  its files as usual).
* :class:`FileSink`: each process writes its values into memory-mapped files
  of a directory, in the format of prometheus_client's multiprocess mode, and
  whoever serves ``/metrics`` merges the directory with its
  ``MultiProcessCollector``.  Unlike prometheus_client's mode it needs no
  environment variable set before ``prometheus_client`` is first imported:
  the directory is given to the sink, when the worker process boots, so the
  import order of the user's modules cannot break it.  Its files are named
  ``<type>_resilience-<pid>.db`` so they never collide with prometheus_client's
  own ``<type>_<pid>.db`` in a shared directory.

Both take ``(spec, label values)`` and are thread-safe.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from .metrics import MetricSpec

__all__ = ["FILE_TAG", "FileSink", "MemorySink", "Sink"]

#: What tags this package's files in a multiprocess directory.
FILE_TAG = "resilience-"


class Sink:
    """The interface: count, observe, set."""

    def inc(self, spec: MetricSpec, labels: Sequence[str], amount: float = 1.0) -> None:
        raise NotImplementedError

    def observe(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        raise NotImplementedError

    def set(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release files (a worker process's live gauges are removed)."""


class MemorySink(Sink):
    """prometheus_client metric objects in ``registry`` (a private one by default).

    ``registry`` is a ``prometheus_client.CollectorRegistry``; expose it with
    ``prometheus_client.generate_latest(sink.registry)`` or register its
    metrics elsewhere.
    """

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client

        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        self._lock = threading.Lock()
        self._metrics: dict[str, Any] = {}
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}

    def _metric(self, spec: MetricSpec) -> Any:
        import prometheus_client

        metric = self._metrics.get(spec.name)
        if metric is None:
            with self._lock:
                metric = self._metrics.get(spec.name)
                if metric is None:
                    if spec.kind == "counter":
                        metric = prometheus_client.Counter(
                            spec.name, spec.help, spec.labels, registry=self.registry
                        )
                    elif spec.kind == "histogram":
                        metric = prometheus_client.Histogram(
                            spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=self.registry
                        )
                    else:
                        metric = prometheus_client.Gauge(
                            spec.name,
                            spec.help,
                            spec.labels,
                            registry=self.registry,
                            multiprocess_mode=spec.mode or "all",  # type: ignore[arg-type]
                        )
                    self._metrics[spec.name] = metric
        return metric

    def _child(self, spec: MetricSpec, labels: Sequence[str]) -> Any:
        key = (spec.name, tuple(labels))
        child = self._children.get(key)
        if child is None:
            metric = self._metric(spec)
            child = self._children[key] = metric.labels(*labels) if spec.labels else metric
        return child

    def inc(self, spec: MetricSpec, labels: Sequence[str], amount: float = 1.0) -> None:
        self._child(spec, labels).inc(amount)

    def observe(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        self._child(spec, labels).observe(value)

    def set(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        self._child(spec, labels).set(value)


def _mmap_key(spec: MetricSpec, sample: str, labelnames: Sequence[str], labels: Sequence[str]) -> str:
    from prometheus_client.mmap_dict import mmap_key

    try:
        return mmap_key(spec.name, sample, list(labelnames), list(labels), spec.help)
    except TypeError:  # prometheus-client < 0.17 kept no help text in its files
        return json.dumps([spec.name, sample, dict(zip(labelnames, labels, strict=True))], sort_keys=True)


def _go_float(value: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(value)


class FileSink(Sink):
    """Values in memory-mapped files of ``directory``, one set of files per process.

    After a ``fork`` the child starts its own files (its counts start at
    zero; the parent's stay the parent's).  :meth:`close` removes this
    process's live gauges (``livesum``: messages in progress), as
    prometheus_client's ``mark_process_dead`` does for its own files.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._pid = -1
        self._files: dict[str, Any] = {}
        self._values: dict[tuple[str, str], float] = {}
        self._keys: dict[tuple[str, str, tuple[str, ...]], str] = {}
        self._buckets: dict[tuple[str, tuple[str, ...]], list[str]] = {}

    def _prefix(self, spec: MetricSpec) -> str:
        return f"gauge_{spec.mode or 'all'}" if spec.kind == "gauge" else spec.kind

    def _file(self, prefix: str) -> Any:
        """This process's file for ``prefix`` (call with the lock held)."""
        pid = os.getpid()
        if pid != self._pid:  # first use, or a fork: the child writes its own files
            for handle in self._files.values():
                handle.close()
            self._files.clear()
            self._values.clear()
            self._pid = pid
        handle = self._files.get(prefix)
        if handle is None:
            from prometheus_client.mmap_dict import MmapedDict

            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            path = os.path.join(self.directory, f"{prefix}_{FILE_TAG}{pid}.db")
            handle = self._files[prefix] = MmapedDict(path)
        return handle

    def _key(self, spec: MetricSpec, sample: str, labelnames: Sequence[str], labels: Sequence[str]) -> str:
        cache = (spec.name, sample, tuple(labels))
        key = self._keys.get(cache)
        if key is None:
            key = self._keys[cache] = _mmap_key(spec, sample, labelnames, labels)
        return key

    def _add(self, prefix: str, key: str, amount: float, timestamp: float = 0.0) -> None:
        handle = self._file(prefix)
        value = self._values.get((prefix, key))
        if value is None:
            value, _ = handle.read_value(key)
        value += amount
        self._values[(prefix, key)] = value
        handle.write_value(key, value, timestamp)

    def inc(self, spec: MetricSpec, labels: Sequence[str], amount: float = 1.0) -> None:
        sample = spec.name + "_total" if spec.kind == "counter" else spec.name
        key = self._key(spec, sample, spec.labels, labels)
        with self._lock:
            self._add(self._prefix(spec), key, amount)

    def _bucket_keys(self, spec: MetricSpec, labels: Sequence[str]) -> list[str]:
        cache = (spec.name, tuple(labels))
        keys = self._buckets.get(cache)
        if keys is None:
            names = (*spec.labels, "le")
            bounds = (*spec.buckets, float("inf"))
            keys = [_mmap_key(spec, spec.name + "_bucket", names, (*labels, _go_float(b))) for b in bounds]
            self._buckets[cache] = keys
        return keys

    def observe(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        # prometheus_client stores each bucket's own count (the collector accumulates them),
        # and every bucket of a label set exists from its first observation, +Inf included.
        index = next((i for i, bound in enumerate(spec.buckets) if value <= bound), len(spec.buckets))
        buckets = self._bucket_keys(spec, labels)
        total = self._key(spec, spec.name + "_sum", spec.labels, labels)
        with self._lock:
            if ("histogram", total) not in self._values:
                for key in buckets:
                    self._add("histogram", key, 0.0)
            self._add("histogram", buckets[index], 1.0)
            self._add("histogram", total, value)

    def set(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        key = self._key(spec, spec.name, spec.labels, labels)
        prefix = self._prefix(spec)
        with self._lock:
            handle = self._file(prefix)
            self._values[(prefix, key)] = float(value)
            handle.write_value(key, float(value), time.time())

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()
            self._values.clear()
            if self._pid == os.getpid():
                for path in glob.glob(os.path.join(self.directory, f"gauge_live*_{FILE_TAG}{self._pid}.db")):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
