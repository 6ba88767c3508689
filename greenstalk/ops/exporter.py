"""The Prometheus exporter behind ``greenstalk exporter``.

On each request for ``/metrics`` every server is read at once, each over
its one connection and within its own timeout, and the result is written in
the Prometheus text format (or OpenMetrics, when asked) by
``prometheus_client``. A server that cannot be read has ``beanstalkd_up 0``;
the scrape itself still succeeds.

Two namings:

* ``prometheus`` (the default) follows Prometheus' conventions: a
  ``beanstalkd_`` prefix, counters as ``_total`` counters, units in the
  names, states and commands as labels, and a ``server`` label; plus the
  age of each tube's oldest ready job and of its next delayed job.
* ``messagebird`` gives the series messagebird/beanstalkd_exporter 1.0.5
  gives, named, typed and labelled as it does (an ``instance`` label), so
  that dashboards and alerts written for it keep working; plus
  ``beanstalkd_up``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import html
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, cast

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .._address import TextAddress
from . import _scrape
from ._links import ServerLink
from ._mapping import MappingError, TubeMapper, file_signature, read_mapping
from ._scrape import ServerState, TubeFilter

log = logging.getLogger("greenstalk.ops.exporter")

NAMINGS = ("prometheus", "messagebird")
APP_KEY: web.AppKey[Exporter] = web.AppKey("exporter")
"""Where :meth:`Exporter.app` keeps its exporter in the application."""
DEFAULT_PORT = 9127
DEFAULT_TIMEOUT = 5.0

# -- the default naming ------------------------------------------------------------

_SERVER_GAUGES = {
    "current-jobs-urgent": ("beanstalkd_current_jobs_urgent",
                            "Ready jobs with a priority below 1024."),
    "current-tubes": ("beanstalkd_current_tubes", "Tubes that exist."),
    "current-connections": ("beanstalkd_current_connections", "Open connections."),
    "current-producers": ("beanstalkd_current_producers",
                          "Open connections that have put a job."),
    "current-workers": ("beanstalkd_current_workers",
                        "Open connections that have reserved a job."),
    "current-waiting": ("beanstalkd_current_waiting",
                        "Connections waiting in a reserve."),
    "max-job-size": ("beanstalkd_max_job_size_bytes", "The largest job body accepted."),
    "uptime": ("beanstalkd_uptime_seconds", "Seconds since the server started."),
    "binlog-oldest-index": ("beanstalkd_binlog_oldest_index",
                            "Index of the oldest job log file in use."),
    "binlog-current-index": ("beanstalkd_binlog_current_index",
                             "Index of the job log file being written."),
    "binlog-max-size": ("beanstalkd_binlog_max_size_bytes",
                        "The size a job log file grows to."),
    "draining": ("beanstalkd_draining", "1 when the server refuses new jobs (drain mode)."),
}
_SERVER_COUNTERS = {
    "job-timeouts": ("beanstalkd_job_timeouts_total",
                     "Jobs handed out again because their TTR ran out."),
    "total-jobs": ("beanstalkd_jobs_total", "Jobs put since the server started."),
    "total-connections": ("beanstalkd_connections_total",
                          "Connections accepted since the server started."),
    "rusage-utime": ("beanstalkd_cpu_user_seconds_total", "CPU time spent in user mode."),
    "rusage-stime": ("beanstalkd_cpu_system_seconds_total", "CPU time spent by the kernel."),
    "binlog-records-migrated": ("beanstalkd_binlog_records_migrated_total",
                                "Job log records rewritten to free old files."),
    "binlog-records-written": ("beanstalkd_binlog_records_written_total",
                               "Job log records written."),
}
_SERVER_INFO = ("version", "id", "hostname", "os", "platform")
_SERVER_SKIPPED = frozenset({"pid"})

_TUBE_GAUGES = {
    "current-jobs-urgent": ("beanstalkd_tube_current_jobs_urgent",
                            "Ready jobs of the tube with a priority below 1024."),
    "current-using": ("beanstalkd_tube_current_using",
                      "Connections using (putting into) the tube."),
    "current-watching": ("beanstalkd_tube_current_watching", "Connections watching the tube."),
    "current-waiting": ("beanstalkd_tube_current_waiting",
                        "Connections waiting in a reserve on the tube."),
    "pause": ("beanstalkd_tube_pause_seconds", "The length of the tube's current pause."),
    "pause-time-left": ("beanstalkd_tube_pause_time_left_seconds",
                        "Seconds until the tube's pause ends."),
}
_TUBE_COUNTERS = {
    "total-jobs": ("beanstalkd_tube_jobs_total", "Jobs put into the tube since it was created."),
}
_JOB_STATES = ("ready", "reserved", "delayed", "buried")

# (state of the next job, stats-job field, metric name, help)
_NEXT_JOBS = [
    ("ready", "age", "beanstalkd_tube_oldest_ready_job_age_seconds",
     "Age of the tube's oldest ready job of its most urgent priority: the job reserve "
     "hands out next (absent without ready jobs)."),
    ("delayed", "age", "beanstalkd_tube_next_delayed_job_age_seconds",
     "Age of the tube's delayed job that becomes ready first (absent without delayed jobs)."),
    ("delayed", "time-left", "beanstalkd_tube_next_delayed_job_time_left_seconds",
     "Seconds until the tube's next delayed job becomes ready (absent without delayed jobs)."),
]

# -- messagebird/beanstalkd_exporter 1.0.5 -----------------------------------------

_MESSAGEBIRD_SKIPPED_SERVER = frozenset({"hostname", "id", "pid"})
# beanstalkd writes these in quotes (version: "1.12"), which 1.0.5 hands to
# ParseFloat as they are: it exports 0. greenstalk's parser removes the quotes.
_MESSAGEBIRD_QUOTED = frozenset({"version"})
_MESSAGEBIRD_SKIPPED_TUBE = frozenset({"name", "tube-name"})
# client_golang's default histogram buckets, which its scrape_seconds uses.
_GO_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# What Go's strconv.ParseFloat accepts in decimal; anything else it refuses, and
# 1.0.5 then exports 0 (so draining is always 0 there).
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE
)


def go_float(value: object) -> float:
    """A statistic's value as 1.0.5 exports it: its text read by Go's ParseFloat, else 0."""
    if isinstance(value, bool):
        return 0.0  # "true" and "false" are not numbers to ParseFloat
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    return float(text) if _GO_FLOAT.fullmatch(text) else 0.0


class _Families(Collector):
    """Metric families ready to be written by a prometheus_client encoder."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


@dataclasses.dataclass
class _Histogram:
    """A histogram kept by hand: prometheus_client's own would add ``_created`` series."""

    bounds: tuple[float, ...]
    counts: list[int] = dataclasses.field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
        self.counts[-1] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        counts = self.counts or [0] * (len(self.bounds) + 1)
        buckets = [(_go_number(bound), count) for bound, count in zip(self.bounds, counts)]
        buckets.append(("+Inf", counts[-1]))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


def _go_number(value: float) -> str:
    """A bucket bound as Go writes it: 0.005, 1, 2.5."""
    return f"{value:g}"


class Exporter:
    """The exporter of one or several servers.

    ``names`` is ``"prometheus"`` or ``"messagebird"``. ``tubes`` chooses
    the tubes read. ``mapping`` is the path of a mapping file
    (:mod:`greenstalk.ops._mapping`), read again whenever it changes.
    ``timeout`` bounds, in seconds, the reading of each server.

    Raises ValueError for a bad ``names`` or no address, and
    :class:`~greenstalk.ops._mapping.MappingError` for a mapping file that
    cannot be read. Make it anywhere; use it in one event loop.
    """

    def __init__(
        self,
        addresses: Sequence[TextAddress],
        *,
        names: str = "prometheus",
        tubes: TubeFilter | None = None,
        mapping: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if names not in NAMINGS:
            raise ValueError(f"names must be one of {', '.join(NAMINGS)}, not {names!r}")
        if not addresses:
            raise ValueError("give at least one server address")
        self.addresses = list(addresses)
        self.names = names
        self.tubes = tubes or TubeFilter()
        self.timeout = timeout
        self.mapping_path = mapping
        self.mapper = TubeMapper()
        self._signature: tuple[float, int] | None = None
        self.reloads: collections.Counter[str] = collections.Counter()
        if mapping is not None:
            self._signature = file_signature(mapping)
            self.mapper = self._usable(read_mapping(mapping))
        self._links: list[ServerLink] | None = None
        self.requests: collections.Counter[str] = collections.Counter()
        self.connection_errors = 0
        self.scrape_seconds = _Histogram(_GO_BUCKETS)
        self._collisions: set[tuple[str, tuple[str, ...]]] = set()
        # The last error of each server, to log changes rather than every scrape.
        self._errors: dict[str, str] = {}

    def _usable(self, mapper: TubeMapper) -> TubeMapper:
        """The mappings this naming uses (1.0.5 ignores a last block without a blank line after)."""
        last = mapper.unterminated
        if last is None:
            return mapper
        if self.names == "messagebird":
            log.warning(
                "%s: the mapping on line %d is ignored, as beanstalkd_exporter 1.0.5 ignores a "
                "last mapping without a blank line after it; add one to use it",
                self.mapping_path, last.line,
            )
            return dataclasses.replace(mapper, unterminated=None)
        return TubeMapper((*mapper.mappings, last))

    @property
    def links(self) -> list[ServerLink]:
        """The servers, each with its connection (made on first use, in the running loop)."""
        if self._links is None:
            # Each scrape is bounded as a whole: no timer per command.
            self._links = [
                ServerLink(address, self.timeout, per_command=False) for address in self.addresses
            ]
        return self._links

    async def close(self) -> None:
        """Close every server's connection."""
        for link in self._links or ():
            await link.close()

    def _reload_if_changed(self) -> None:
        """Read the mapping file again when it changed; keep the old mappings if it is bad."""
        if self.mapping_path is None:
            return
        signature = file_signature(self.mapping_path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            self.mapper = self._usable(read_mapping(self.mapping_path))
        except MappingError as error:
            log.error("%s; the previous mappings stay in use", error)
            self.reloads["failure"] += 1
            return
        log.warning("%s: mappings reloaded", self.mapping_path)
        self.reloads["success"] += 1

    async def collect(self) -> list[Metric]:
        """Read every server (at once) and return the metric families."""
        self._reload_if_changed()
        states = await asyncio.gather(
            *(
                _scrape.scrape(link, self.tubes, self.names == "prometheus", self.timeout)
                for link in self.links
            )
        )
        for state in states:
            # A Counter key made by += 0 would become a series 1.0.5 does not have yet.
            for outcome, count in (("success", state.succeeded), ("failure", state.failed)):
                if count:
                    self.requests[outcome] += count
            self.connection_errors += state.connect_failed
            self.scrape_seconds.observe(state.duration)
            self._log_change(state)
        if self.names == "messagebird":
            return self._messagebird(states)
        return self._prometheus(states)

    def _log_change(self, state: ServerState) -> None:
        """Log a server that went down (or failed otherwise than before), or came back."""
        name = state.link.name
        before = self._errors.get(name, "")
        if state.error and state.error != before:
            log.warning("%s is down: %s", name, state.error)
        elif before and not state.error:
            log.warning("%s is back", name)
        self._errors[name] = state.error

    async def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """Collect, and write the result in the format ``accept`` asks for.

        Returns the bytes and their content type (the Prometheus text
        format unless OpenMetrics is asked for).
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(_Families(await self.collect())), content_type

    # -- the default naming ------------------------------------------------------

    def _prometheus(self, states: list[ServerState]) -> list[Metric]:
        up = GaugeMetricFamily("beanstalkd_up", "1 when the server answered the last scrape.",
                               labels=["server"])
        duration = GaugeMetricFamily("beanstalkd_exporter_scrape_duration_seconds",
                                     "Seconds the last scrape of the server took.",
                                     labels=["server"])
        server = _Builder(["server"])
        tube_labels = ["server", *self._tube_label_names()]
        tube = _TubeSeries(tube_labels)
        for state in states:
            name = state.link.name
            up.add_metric([name], 1.0 if state.up else 0.0)
            duration.add_metric([name], state.duration)
            if state.stats is not None and state.up:
                _server_series(server, name, state.stats)
                for labels, found in self._tube_labels(state):
                    tube.add(labels, found)
        families: list[Metric] = [up, duration, *server.families(), *tube.families()]
        if self.mapping_path is not None:
            families.extend(self._mapping_families("beanstalkd_exporter_loaded_mappings"))
        return families

    def _tube_label_names(self) -> list[str]:
        return ["tube", *self.mapper.label_names]

    def _tube_labels(self, state: ServerState) -> Iterator[tuple[list[str], _scrape.TubeState]]:
        """Each tube's label values (in :meth:`_tube_label_names` order, after the server's).

        A tube whose labels (after mapping) are those of a tube before it is
        left out, as 1.0.5 leaves out a series it already has; that is
        logged once.
        """
        names = self._tube_label_names()
        seen: set[tuple[str, ...]] = set()
        for found in state.tubes:
            labels = self.mapper.labels(found.stats["name"])
            values = (state.link.name, *(labels[name] for name in names))
            if values in seen:
                key = (found.stats["name"], values)
                if key not in self._collisions:
                    self._collisions.add(key)
                    log.warning(
                        "%s: tube %s maps to the labels of another tube, and is left out",
                        state.link.name, found.stats["name"],
                    )
                continue
            seen.add(values)
            yield list(values), found

    def _mapping_families(self, loaded_name: str) -> list[Metric]:
        families: list[Metric] = []
        if self.reloads:
            reloads = CounterMetricFamily("beanstalkd_exporter_config_reloads_total",
                                          "Reloads of the mapping file, by outcome.",
                                          labels=["outcome"])
            for outcome, count in sorted(self.reloads.items()):
                reloads.add_metric([outcome], count)
            families.append(reloads)
        families.append(GaugeMetricFamily(loaded_name, "Mappings loaded from the mapping file.",
                                          value=len(self.mapper.mappings)))
        return families

    # -- messagebird's naming -----------------------------------------------------

    def _messagebird(self, states: list[ServerState]) -> list[Metric]:
        # Every scrape counts a command at least, so this family is never empty.
        requests = CounterMetricFamily("beanstalkd_exporter_requests_total",
                                       "Commands sent to the servers, by outcome.",
                                       labels=["outcome"])
        for outcome, count in sorted(self.requests.items()):
            requests.add_metric([outcome], count)
        families: list[Metric] = [requests]
        families.append(CounterMetricFamily("beanstalkd_exporter_scrape_connection_errors_total",
                                            "Failed connections to the servers.",
                                            value=self.connection_errors))
        families.append(self.scrape_seconds.family("beanstalkd_exporter_scrape_seconds",
                                                   "Seconds each scrape of a server took."))
        families.extend(self._mapping_families("beanstalkd_exporter_loaded_mappings_count"))
        up = GaugeMetricFamily("beanstalkd_up", "1 when the server answered the last scrape.",
                               labels=["instance"])
        server = _Builder(["instance"])
        # Labels sorted by name, as client_golang writes them; the values of
        # _tube_labels come server first, then in _tube_label_names order.
        own = self._tube_label_names()
        tube_names = sorted(["instance", *own])
        pick = [0 if label == "instance" else 1 + own.index(label) for label in tube_names]
        tube = _Builder(tube_names)
        for state in states:
            name = state.link.name
            up.add_metric([name], 1.0 if state.up else 0.0)
            if state.stats is None or not state.up:
                continue
            for key, value in cast(Mapping[str, object], state.stats).items():
                if key not in _MESSAGEBIRD_SKIPPED_SERVER:
                    number = 0.0 if key in _MESSAGEBIRD_QUOTED else go_float(value)
                    server.gauge(key.replace("-", "_"), key, [name], number)
            for values, found in self._tube_labels(state):
                labels = [values[index] for index in pick]
                for key, value in cast(Mapping[str, object], found.stats).items():
                    if key not in _MESSAGEBIRD_SKIPPED_TUBE:
                        tube.gauge("tube_" + key.replace("-", "_"), key, labels, go_float(value))
        families.append(up)
        families.extend(server.families())
        families.extend(tube.families())
        return families

    # -- HTTP ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application: ``/metrics``, and a page linking to it at ``/``."""
        app = web.Application()
        app[APP_KEY] = self
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)

        async def close(app: web.Application) -> None:
            await self.close()

        app.on_cleanup.append(close)
        return app

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        body, content_type = await self.exposition(request.headers.get("Accept", ""))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def _index(self, request: web.Request) -> web.StreamResponse:
        servers = "".join(f"<li>{html.escape(link.name)}</li>" for link in self.links)
        return web.Response(
            text=(
                "<!doctype html><html><head><meta charset='utf-8'>"
                "<title>beanstalkd exporter</title></head><body>"
                "<h1>beanstalkd exporter (greenstalk)</h1>"
                f"<p><a href='metrics'>Metrics</a> ({html.escape(self.names)} names) of:</p>"
                f"<ul>{servers}</ul></body></html>"
            ),
            content_type="text/html",
        )


class _Builder:
    """Metric families, each made when its first sample comes, in that order."""

    def __init__(self, labels: list[str]) -> None:
        #: The labels every family starts with.
        self.labels = labels
        self._families: dict[str, Metric] = {}

    def family(self, kind: Callable[..., Metric], name: str, documentation: str,
               labels: list[str]) -> Metric:
        """The family ``name``: a ``kind`` with ``labels``, made if new."""
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = kind(name, documentation, labels=labels)
        return family

    def add(self, kind: Callable[..., Metric], name: str, documentation: str,
            labels: list[str], values: list[str], value: float) -> None:
        """Add a sample to the family ``name`` (a ``kind`` with ``labels``, made if new)."""
        cast(Any, self.family(kind, name, documentation, labels)).add_metric(values, value)

    def gauge(self, name: str, documentation: str, values: list[str], value: float) -> None:
        """Add a sample to the gauge ``name``, whose labels are :attr:`labels`."""
        self.add(GaugeMetricFamily, name, documentation, self.labels, values, value)

    def families(self) -> list[Metric]:
        return list(self._families.values())


def _number(value: object) -> float | None:
    """A statistic as a number: booleans as 1 and 0; None for text."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _server_series(builder: _Builder, server: str, stats: object) -> None:
    values = cast(Mapping[str, object], stats)
    labels = builder.labels
    for key, value in values.items():
        number = _number(value)
        if key in _SERVER_GAUGES:
            name, documentation = _SERVER_GAUGES[key]
            builder.add(GaugeMetricFamily, name, documentation, labels, [server], number or 0.0)
        elif key in _SERVER_COUNTERS:
            name, documentation = _SERVER_COUNTERS[key]
            builder.add(CounterMetricFamily, name, documentation, labels, [server],
                        number or 0.0)
        elif key.startswith("cmd-"):
            builder.add(CounterMetricFamily, "beanstalkd_commands_total",
                        "Commands received, by command.", [*labels, "command"],
                        [server, key[4:]], number or 0.0)
        elif key.startswith("current-jobs-"):
            builder.add(GaugeMetricFamily, "beanstalkd_current_jobs",
                        "Jobs in each state.", [*labels, "state"],
                        [server, key[len("current-jobs-"):]], number or 0.0)
        elif key in _SERVER_INFO or key in _SERVER_SKIPPED:
            continue
        elif number is not None and math.isfinite(number):  # a statistic of a later server
            builder.add(GaugeMetricFamily, "beanstalkd_" + key.replace("-", "_"), key,
                        labels, [server], number)
    info = [str(values.get(key, "")) for key in _SERVER_INFO]
    builder.add(GaugeMetricFamily, "beanstalkd_info",
                "The server's version, id, host name, system and platform (always 1).",
                [*labels, *_SERVER_INFO], [server, *info], 1.0)


class _TubeSeries:
    """The tube families of the default names; each statistic is routed to its family once.

    Two thousand tubes make some thirty thousand samples: the work per
    sample is kept to a list and a call.
    """

    def __init__(self, labels: list[str]) -> None:
        self.builder = _Builder(labels)
        # statistic -> (family, the extra label's value or None); None: not exported
        self._routes: dict[str, tuple[Metric, str | None] | None] = {}

    def _route(self, key: str, value: object) -> tuple[Metric, str | None] | None:
        """Where a tube statistic goes (the family made with the first sample's labels)."""
        names = self.builder.labels
        kind: Callable[..., Metric] = GaugeMetricFamily
        extra: str | None = None
        if _number(value) is None:
            route = None
        else:
            if key in _TUBE_GAUGES:
                name, documentation = _TUBE_GAUGES[key]
            elif key in _TUBE_COUNTERS:
                name, documentation = _TUBE_COUNTERS[key]
                kind = CounterMetricFamily
            elif key.startswith("cmd-"):
                name, documentation = ("beanstalkd_tube_commands_total",
                                       "Commands received about the tube, by command.")
                kind, extra, names = CounterMetricFamily, key[4:], [*names, "command"]
            elif key.startswith("current-jobs-") and key[len("current-jobs-"):] in _JOB_STATES:
                name, documentation = ("beanstalkd_tube_current_jobs",
                                       "Jobs of the tube in each state.")
                extra, names = key[len("current-jobs-"):], [*names, "state"]
            else:  # a statistic of a later server
                name, documentation = "beanstalkd_tube_" + key.replace("-", "_"), key
            family = self.builder.family(kind, name, documentation, names)
            route = (family, extra)
        self._routes[key] = route
        return route

    def add(self, labels: list[str], found: _scrape.TubeState) -> None:
        """The samples of one tube, whose label values are ``labels``."""
        routes = self._routes
        for key, value in cast(Mapping[str, Any], found.stats).items():
            route = routes[key] if key in routes else self._route(key, value)
            if route is not None:
                family, extra = route
                family.add_metric(labels if extra is None else [*labels, extra],  # type: ignore[attr-defined]
                                  value)
        for state, field, name, documentation in _NEXT_JOBS:
            job = found.next_jobs.get(state)
            if job is not None:
                seconds = cast(Mapping[str, int], job)[field]
                self.builder.add(GaugeMetricFamily, name, documentation, self.builder.labels,
                                 labels, float(seconds))

    def families(self) -> list[Metric]:
        return self.builder.families()
