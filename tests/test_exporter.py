"""greenstalk exporter: its metrics against real servers, messagebird's scheme, mapping files.

The scheme of messagebird/beanstalkd_exporter 1.0.5 is written down here
from its source (exporter.go, mapper.go; Go is not available to run it):
every server statistic but hostname, id and pid as a gauge named after it
(``-`` as ``_``) with an ``instance`` label; every tube statistic but name
as ``tube_<stat>`` with ``instance`` and ``tube`` (and the mapping's
labels); ``beanstalkd_exporter_requests_total{outcome}``,
``..._scrape_connection_errors_total``, ``..._scrape_seconds`` (a histogram
with client_golang's default buckets) and ``..._loaded_mappings_count``.
Values are the statistic's text read by Go's ParseFloat, 0 when it fails.
The expected scheme is built from the server's raw replies, read over a
plain socket, and compared with the exporter's output as
prometheus_client's own parser reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import greenstalk
from greenstalk.cli import main
from greenstalk.ops import _mapping
from greenstalk.ops._mapping import MappingError, TubeMapper, expand, parse_mapping
from greenstalk.ops._scrape import TubeFilter
from greenstalk.ops.exporter import APP_KEY, Exporter, go_float
from greenstalk.testing import ServerProcess, run_server

from .conftest import StartServer
from .fakeserver import Close, Expect, FakeServer, Send, Step
from .ops_support import DEADLINE, eventually, request, served

ROOT = Path(__file__).resolve().parent.parent
GO_BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
README_MAPPING = """incoming-emails-(\\d+)
name="incoming-emails"
user_id="$1"

some-other-tube-(\\w+)-processor-(\\d+)
name="some-other-tube"
processor="$1"
node_id="$2"
"""

Samples = dict[str, tuple[str, set[tuple[tuple[str, str], ...]]]]


def name_of(address: Any) -> str:
    return greenstalk.describe_address(address)


def families(text: str) -> dict[str, Any]:
    """The exposition, parsed by prometheus_client, by family name."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str) -> Samples:
    """Each sample name with its family's type and the label sets it has."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind, labels = found.setdefault(sample.name, (family.type, set()))
            assert kind == family.type
            labels.add(tuple(sorted(sample.labels.items())))
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels``, or None."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def scrape(url: str, **headers: str) -> str:
    reply = request(url + "/metrics", headers=headers)
    assert reply.status == 200, reply.text
    return reply.text


@contextlib.contextmanager
def exporting(*addresses: Any, **options: Any) -> Iterator[str]:
    exporter = Exporter(list(addresses), **options)
    with served(exporter.app) as url:
        yield url


# -- reading a server as beanstalkd_exporter did (its client's parseDict/parseList) --------


def raw(address: Any, command: bytes) -> bytes:
    """One command's YAML reply, over a plain socket."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(address)
        sock.sendall(command + b"\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n")
        size = int(head.split()[1])
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        return rest[:size]


def raw_dict(address: Any, command: bytes) -> dict[str, str]:
    text = raw(address, command).decode()
    text = text[4:] if text.startswith("---\n") else text
    return dict(line.split(": ", 1) for line in text.split("\n") if ": " in line)


def raw_list(address: Any, command: bytes) -> list[str]:
    lines = raw(address, command).decode().split("\n")
    return [line[2:] for line in lines if line.startswith("- ")]


def messagebird_scheme(
    address: Any, tube_labels: dict[str, dict[str, str]] | None = None, mappings: int = 0
) -> tuple[Samples, dict[str, float]]:
    """The samples 1.0.5 exports for this server's state now, and the values of the stable ones.

    ``tube_labels`` gives the labels of mapped tubes (``tube`` included);
    other tubes get their name as ``tube`` and empty mapping labels.
    """
    instance = name_of(address)
    scheme: Samples = {
        "beanstalkd_exporter_requests_total": ("counter", {(("outcome", "success"),)}),
        "beanstalkd_exporter_scrape_connection_errors_total": ("counter", {()}),
        "beanstalkd_exporter_scrape_seconds_bucket": (
            "histogram", {(("le", bound),) for bound in GO_BUCKETS}
        ),
        "beanstalkd_exporter_scrape_seconds_count": ("histogram", {()}),
        "beanstalkd_exporter_scrape_seconds_sum": ("histogram", {()}),
        "beanstalkd_exporter_loaded_mappings_count": ("gauge", {()}),
    }
    stable: dict[str, float] = {"beanstalkd_exporter_loaded_mappings_count": mappings}
    for key, text in raw_dict(address, b"stats").items():
        if key in ("hostname", "id", "pid"):
            continue
        name = key.replace("-", "_")
        scheme[name] = ("gauge", {(("instance", instance),)})
        if key.startswith(("current-jobs", "total-jobs", "max-job-size", "draining", "version",
                           "os", "platform")):
            stable[name] = parse_float_like_go(text)
    mapped = tube_labels or {}
    extra = sorted({label for labels in mapped.values() for label in labels} - {"tube"})
    for tube in raw_list(address, b"list-tubes"):
        labels = {"instance": instance, **dict.fromkeys(extra, ""), "tube": tube}
        labels.update(mapped.get(tube, {}))
        label_tuple = tuple(sorted(labels.items()))
        for key, text in raw_dict(address, b"stats-tube " + tube.encode()).items():
            if key == "name":
                continue
            name = "tube_" + key.replace("-", "_")
            scheme.setdefault(name, ("gauge", set()))[1].add(label_tuple)
            if key.startswith(("current-jobs", "total-jobs")):
                stable[f"{name}{label_tuple}"] = parse_float_like_go(text)
    return scheme, stable


def parse_float_like_go(text: str) -> float:
    """strconv.ParseFloat on the decimal texts beanstalkd writes; 0 when it fails, as 1.0.5."""
    return float(text) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text) else 0.0


def stable_values(text: str, stable: dict[str, float]) -> dict[str, float]:
    """The values ``stable`` names, as the exposition ``text`` has them."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            keys = [sample.name, f"{sample.name}{tuple(sorted(sample.labels.items()))}"]
            for key in keys:
                if key in stable:
                    found[key] = float(sample.value)
    return found


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server()


def make_state(address: Any, stack: contextlib.ExitStack) -> None:
    """Jobs in every state in tube emails-1, a used empty tube, a paused tube."""
    producer = stack.enter_context(greenstalk.Client(address, use="emails-1"))
    producer.put(b"first", priority=5)
    producer.put(b"second", priority=100)
    producer.put(b"later", delay=100)
    producer.put(b"broken")
    producer.put(b"held")
    worker = stack.enter_context(greenstalk.Client(address, watch="emails-1"))
    worker.bury(worker.reserve(0))  # "first"
    worker.reserve(0)  # "second", held while the test runs
    stack.enter_context(greenstalk.Client(address, use="empty"))
    producer.use("paused")
    producer.put(b"waits")
    producer.pause_tube("paused", 300)


# -- messagebird's scheme ------------------------------------------------------------


def test_messagebird_names_types_and_labels(server: ServerProcess) -> None:
    with contextlib.ExitStack() as stack:
        make_state(server.address, stack)
        with exporting(server.address, names="messagebird") as url:
            text = scrape(url)
            expected, stable = messagebird_scheme(server.address)
    found = samples(text)
    # beanstalkd_up is the one series added to 1.0.5's.
    assert found.pop("beanstalkd_up") == ("gauge", {(("instance", name_of(server.address)),)})
    assert found == expected
    assert stable_values(text, stable) == stable
    assert value(text, "draining", instance=name_of(server.address)) == 0  # ParseFloat("false")
    # beanstalkd writes version: "1.12", quotes and all, and ParseFloat refuses that.
    assert value(text, "version", instance=name_of(server.address)) == 0
    # Every family has a single type, and no family is empty.
    for family in text_string_to_metric_families(text):
        assert family.samples, family.name


def test_messagebird_with_the_readme_mapping(server: ServerProcess, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.conf"
    mapping.write_text(README_MAPPING + "\n")
    with greenstalk.Client(server.address) as client:
        for tube in ("incoming-emails-7822", "incoming-emails-1235",
                     "some-other-tube-abc-processor-42", "plain"):
            client.use(tube)
            client.put(b"x")
        with exporting(server.address, names="messagebird", mapping=mapping) as url:
            text = scrape(url)
            labels = {
                "incoming-emails-7822": {"tube": "incoming-emails", "user_id": "7822"},
                "incoming-emails-1235": {"tube": "incoming-emails", "user_id": "1235"},
                "some-other-tube-abc-processor-42": {
                    "tube": "some-other-tube", "processor": "abc", "node_id": "42"
                },
            }
            expected, stable = messagebird_scheme(server.address, labels, mappings=2)
    found = samples(text)
    found.pop("beanstalkd_up")
    assert found == expected
    assert stable_values(text, stable) == stable
    assert value(text, "tube_current_jobs_ready", instance=name_of(server.address),
                 tube="incoming-emails", user_id="7822", processor="", node_id="") == 1


def test_a_last_mapping_without_a_blank_line_after_it(
    server: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1.0.5 ends a mapping only at a blank line: the README's file as saved loses its last."""
    mapping = tmp_path / "mapping.conf"
    mapping.write_text(README_MAPPING.rstrip("\n"))
    instance = name_of(server.address)
    with greenstalk.Client(server.address, use="some-other-tube-a-processor-1") as client:
        client.put(b"x")
        with caplog.at_level(logging.WARNING, "greenstalk.ops"), exporting(
            server.address, names="messagebird", mapping=mapping
        ) as url:
            text = scrape(url)
        assert "ignored" in caplog.text
        assert value(text, "beanstalkd_exporter_loaded_mappings_count") == 1
        assert value(text, "tube_current_jobs_ready", instance=instance,
                     tube="some-other-tube-a-processor-1", user_id="") == 1
        # The default names use it.
        with exporting(server.address, mapping=mapping) as url:
            text = scrape(url)
    assert value(text, "beanstalkd_exporter_loaded_mappings") == 2
    assert value(text, "beanstalkd_tube_current_jobs", server=instance, state="ready",
                 tube="some-other-tube", processor="a", node_id="1", user_id="") == 1


def test_tubes_mapped_to_the_same_labels_are_exported_once(
    server: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mapping = tmp_path / "mapping.conf"
    mapping.write_text('jobs-.*\nname="jobs"\n\n')
    with greenstalk.Client(server.address) as client:
        for tube in ("jobs-a", "jobs-b"):
            client.use(tube)
            client.put(b"x")
        with caplog.at_level(logging.WARNING, "greenstalk.ops"), exporting(
            server.address, names="messagebird", mapping=mapping
        ) as url:
            text = scrape(url)
            scrape(url)
    series = [
        sample for family in text_string_to_metric_families(text)
        if family.name == "tube_current_jobs_ready" for sample in family.samples
    ]
    assert sorted(sample.labels["tube"] for sample in series) == ["default", "jobs"]
    assert caplog.text.count("left out") == 1


def test_the_mapping_file_is_read_again_when_it_changes(
    server: ServerProcess, tmp_path: Path
) -> None:
    mapping = tmp_path / "mapping.conf"
    mapping.write_text('orders-(\\d+)\nname="orders"\nshop="$1"\n\n')
    instance = name_of(server.address)
    with greenstalk.Client(server.address, use="orders-7") as client:
        client.put(b"x")
        with exporting(server.address, names="messagebird", mapping=mapping) as url:
            text = scrape(url)
            assert value(text, "tube_total_jobs", instance=instance, tube="orders",
                         shop="7") == 1
            reloads = "beanstalkd_exporter_config_reloads_total"
            assert value(text, reloads, outcome="success") is None
            mapping.write_text('orders-(\\d+)\nname="orders"\nstore="$1"\n\n')
            os.utime(mapping, (time.time() + 10, time.time() + 10))
            text = scrape(url)
            assert value(text, "tube_total_jobs", instance=instance, tube="orders",
                         store="7") == 1
            assert value(text, reloads, outcome="success") == 1
            mapping.write_text("orders-(\\d+\n")  # broken: the last good mappings stay
            os.utime(mapping, (time.time() + 20, time.time() + 20))
            text = scrape(url)
    assert value(text, "tube_total_jobs", instance=instance, tube="orders", store="7") == 1
    assert value(text, "beanstalkd_exporter_config_reloads_total", outcome="failure") == 1


# -- the default names -------------------------------------------------------------


def test_default_names(server: ServerProcess) -> None:
    instance = name_of(server.address)
    with contextlib.ExitStack() as stack:
        make_state(server.address, stack)
        with exporting(server.address) as url:
            text = scrape(url)
        stats = stack.enter_context(greenstalk.Client(server.address)).stats_tube("emails-1")
    found = families(text)
    for family in found.values():
        assert family.name.startswith("beanstalkd_"), family.name
        for sample in family.samples:
            assert sample.labels["server"] == instance
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
    assert value(text, "beanstalkd_up", server=instance) == 1
    assert found["beanstalkd_commands"].type == "counter"
    assert value(text, "beanstalkd_commands_total", server=instance, command="put") == 6
    assert found["beanstalkd_current_jobs"].type == "gauge"
    for state in ("ready", "reserved", "delayed", "buried"):
        assert value(text, "beanstalkd_tube_current_jobs", server=instance, tube="emails-1",
                     state=state) == stats[f"current-jobs-{state}"]  # type: ignore[literal-required]
        assert value(text, "beanstalkd_current_jobs", server=instance, state=state) == (
            stats[f"current-jobs-{state}"] + (state == "ready")  # type: ignore[literal-required]
        )
    assert value(text, "beanstalkd_tube_jobs_total", server=instance, tube="emails-1") == 5
    assert value(text, "beanstalkd_tube_pause_seconds", server=instance, tube="paused") == 300
    left = value(text, "beanstalkd_tube_pause_time_left_seconds", server=instance, tube="paused")
    assert left is not None
    assert 250 < left <= 300
    assert value(text, "beanstalkd_tube_current_using", server=instance, tube="empty") == 1
    info = found["beanstalkd_info"].samples[0].labels
    assert info["version"]
    assert set(info) == {"server", "version", "id", "hostname", "os",
                                             "platform"}
    # Beyond 1.0.5: the age of the next jobs; absent where there is none.
    ready_age = value(text, "beanstalkd_tube_oldest_ready_job_age_seconds", server=instance,
                      tube="emails-1")
    assert ready_age is not None
    assert 0 <= ready_age < 60
    assert value(text, "beanstalkd_tube_oldest_ready_job_age_seconds", server=instance,
                 tube="empty") is None
    delayed = value(text, "beanstalkd_tube_next_delayed_job_time_left_seconds", server=instance,
                 tube="emails-1")
    assert delayed is not None
    assert 50 < delayed <= 100
    assert value(text, "beanstalkd_tube_next_delayed_job_age_seconds", server=instance,
                 tube="emails-1") is not None


def test_the_grafana_dashboard_asks_for_what_the_exporter_gives(server: ServerProcess) -> None:
    dashboard = json.loads((ROOT / "contrib" / "grafana" / "beanstalkd.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    variables = [variable["definition"] for variable in dashboard["templating"]["list"]
                 if variable["type"] == "query"]
    asked = set(re.findall(r"\bbeanstalkd_[a-z_]+", " ".join(expressions + variables)))
    with contextlib.ExitStack() as stack:
        make_state(server.address, stack)
        with exporting(server.address) as url:
            text = scrape(url)
    given = set(samples(text))
    assert asked
    assert asked - given == set()
    # Every label a query filters or groups by is one the exporter sets.
    labels = set(re.findall(r"\b(server|tube|state|command)\b", " ".join(expressions)))
    assert labels == {"server", "tube", "state", "command"}


def test_the_oldest_ready_job_is_the_next_one_of_its_priority(server: ServerProcess) -> None:
    """The age shown is the job a reserve gets next: the oldest of the most urgent priority."""
    instance = name_of(server.address)
    with greenstalk.Client(server.address, use="ages") as client:
        client.put(b"old", delay=1)
        eventually(lambda: client.stats_tube("ages")["current-jobs-ready"] == 1, "the delay")
        time.sleep(1.1)  # the job must be a second old: ages are whole seconds
        client.put(b"new")
        with exporting(server.address) as url:
            text = scrape(url)
    age = value(text, "beanstalkd_tube_oldest_ready_job_age_seconds", server=instance,
                tube="ages")
    assert age is not None
    assert age >= 1


def test_tube_filters(server: ServerProcess) -> None:
    instance = name_of(server.address)
    with greenstalk.Client(server.address) as client:
        for tube in ("emails-1", "emails-2", "sms"):
            client.use(tube)
            client.put(b"x")
        tubes = TubeFilter(re.compile(r"emails-\d"), re.compile("emails-2"))
        with exporting(server.address, tubes=tubes) as url:
            text = scrape(url)
    shown = {
        sample.labels["tube"]
        for sample in families(text)["beanstalkd_tube_current_jobs"].samples
    }
    assert shown == {"emails-1"}
    assert value(text, "beanstalkd_current_jobs", server=instance, state="ready") == 3


def test_mapped_labels_under_the_default_names(server: ServerProcess, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.conf"
    mapping.write_text(README_MAPPING + "\n")
    instance = name_of(server.address)
    with greenstalk.Client(server.address, use="incoming-emails-9") as client:
        client.put(b"x")
        with exporting(server.address, mapping=mapping) as url:
            text = scrape(url)
    assert value(text, "beanstalkd_tube_current_jobs", server=instance, state="ready",
                 tube="incoming-emails", user_id="9", processor="", node_id="") == 1
    assert value(text, "beanstalkd_exporter_loaded_mappings") == 2


# -- servers that fail ---------------------------------------------------------------


def closed_port() -> tuple[str, int]:
    """A loopback address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()  # type: ignore[no-any-return]


@pytest.mark.parametrize("names", ["prometheus", "messagebird"])
def test_an_unreachable_server_is_down_not_a_failed_scrape(
    server: ServerProcess, names: str
) -> None:
    dead = closed_port()
    label = "server" if names == "prometheus" else "instance"
    with exporting(server.address, dead, names=names) as url:
        text = scrape(url)
    assert value(text, "beanstalkd_up", **{label: name_of(dead)}) == 0
    assert value(text, "beanstalkd_up", **{label: name_of(server.address)}) == 1
    if names == "messagebird":
        assert value(text, "beanstalkd_exporter_scrape_connection_errors_total") == 1
        assert value(text, "beanstalkd_exporter_requests_total", outcome="failure") == 1
        assert value(text, "current_jobs_ready", instance=name_of(dead)) is None
    else:
        assert value(text, "beanstalkd_jobs_total", server=name_of(server.address)) == 0
        assert value(text, "beanstalkd_jobs_total", server=name_of(dead)) is None


def test_a_silent_server_times_out(server: ServerProcess) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections wait in the backlog: nobody ever answers
        address = silent.getsockname()
        with exporting(server.address, address, timeout=0.5) as url:
            for _ in range(2):
                started = time.monotonic()
                text = scrape(url)
                assert time.monotonic() - started < 0.5 + DEADLINE / 3
                assert value(text, "beanstalkd_up", server=name_of(address)) == 0
                assert value(text, "beanstalkd_up", server=name_of(server.address)) == 1


def test_one_connection_per_server_however_many_scrapes(server: ServerProcess) -> None:
    with greenstalk.Client(server.address) as client:
        before = client.stats()["total-connections"]
        with exporting(server.address) as url:
            scrape(url)
            threads = [threading.Thread(target=scrape, args=(url,)) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(DEADLINE)
            scrape(url)
            assert client.stats()["total-connections"] == before + 1
            assert client.stats()["current-connections"] == 2


def test_a_server_that_comes_back_is_read_again(
    server_kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "socket")
    exporter = Exporter([path])
    with caplog.at_level(logging.WARNING, "greenstalk.ops"), served(exporter.app) as url:
        with run_server(server_kind, address=path):
            assert value(scrape(url), "beanstalkd_up", server=f"unix:{path}") == 1
        for _ in range(2):
            assert value(scrape(url), "beanstalkd_up", server=f"unix:{path}") == 0
        with run_server(server_kind, address=path):
            assert value(scrape(url), "beanstalkd_up", server=f"unix:{path}") == 1
    # Logged when it changes, not at every scrape.
    assert caplog.text.count(f"unix:{path} is down") == 1
    assert caplog.text.count(f"unix:{path} is back") == 1


# -- HTTP ------------------------------------------------------------------------------


def test_openmetrics_gzip_and_the_index_page(server: ServerProcess) -> None:
    with exporting(server.address) as url:
        reply = request(url + "/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "gzip",
        })
        index = request(url + "/")
        missing = request(url + "/nothing")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.headers["content-encoding"] == "gzip"
    text = gzip.decompress(reply.body).decode()
    assert text.endswith("# EOF\n")
    assert "beanstalkd_up" in text
    assert index.status == 200
    assert "metrics" in index.text
    assert name_of(server.address) in index.text
    assert missing.status == 404


def test_an_exporter_needs_a_server_and_known_names() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Exporter([])
    with pytest.raises(ValueError, match="names must be one of"):
        Exporter([("127.0.0.1", 1)], names="statsd")


def test_go_float() -> None:
    assert go_float(3) == 3.0
    assert go_float(0.25) == 0.25
    assert go_float(True) == 0.0
    assert go_float("1.12") == 1.12
    assert go_float("1.10+2-gabc") == 0.0
    assert go_float("Linux") == 0.0
    assert go_float("-2e3") == -2000.0


# -- the mapping file, read as 1.0.5 reads it --------------------------------------------


def test_parse_the_readme_mapping() -> None:
    mapper = parse_mapping(README_MAPPING)
    assert len(mapper.mappings) == 2
    assert mapper.unterminated is None
    assert mapper.label_names == ["node_id", "processor", "user_id"]
    assert mapper.labels("incoming-emails-7822") == {
        "tube": "incoming-emails", "user_id": "7822", "processor": "", "node_id": ""
    }
    assert mapper.labels("incoming-emails-x") == {
        "tube": "incoming-emails-x", "user_id": "", "processor": "", "node_id": ""
    }
    assert mapper.labels("some-other-tube-a_b-processor-3") == {
        "tube": "some-other-tube", "user_id": "", "processor": "a_b", "node_id": "3"
    }
    assert TubeMapper().labels("any") == {"tube": "any"}


def test_mapping_lines_are_stripped_and_blank_lines_repeat() -> None:
    mapper = parse_mapping('\n\n  a-(\\d+)  \r\n  name = "a-tube"\r\n key ="$1"\r\n\r\n\n')
    assert mapper.labels("a-5") == {"tube": "a-tube", "key": "5"}


def test_an_alternation_is_anchored_on_its_ends_only() -> None:
    """Go compiles "^" + line + "$" and searches: ^a|b$ matches 'xb' and 'ax'."""
    mapper = parse_mapping('first|second\nname="either"\n\n')
    assert mapper.labels("firstly")["tube"] == "either"
    assert mapper.labels("the-second")["tube"] == "either"
    assert mapper.labels("third")["tube"] == "third"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$1", "abc"),
        ("$2", "42"),
        ("${2}", "42"),
        ("$word", "abc"),
        ("${word}-x", "abc-x"),
        ("$2x", ""),  # the group named "2x", which does not exist
        ("${2}x", "42x"),
        ("$$2", "$2"),
        ("cost: $", "cost: $"),
        ("${2", "${2"),
        ("$9", ""),
        ("$02", ""),  # not a number (leading zero), and no group has that name
        ("$0", "abc-42"),
        ("$-", "$-"),
        ("a$2b-$word", "a-abc"),  # $2b names the group "2b": there is none
    ],
)
def test_templates_expand_as_go_expands_them(template: str, expected: str) -> None:
    match = re.search(r"^(?P<word>[a-z]+)-(\d+)$", "abc-42")
    assert match is not None
    assert expand(template, match) == expected


def test_go_regular_expressions() -> None:
    assert _mapping.compile_go(r"^a\z").search("a")
    assert _mapping.compile_go(r"^[[:digit:]]+$").search("123")
    assert not _mapping.compile_go(r"^[[:digit:]]+$").search("12a")
    assert _mapping.compile_go(r"^\Q1.5\E$").search("1.5")
    assert not _mapping.compile_go(r"^\Q1.5\E$").search("105")
    assert _mapping.compile_go(r"^[ab][[:digit:]]$").search("a1")
    assert _mapping.compile_go(r"^[:x]$").search(":")  # a class holding ':' and 'x'
    assert _mapping.compile_go(r"^\d+$").search("42")
    assert not _mapping.compile_go(r"^\d+$").search("٤٢")  # RE2's \d is ASCII
    for refused, why in [
        ("a(?=b)", "look-around"),
        ("(?<!a)b", "look-around"),
        (r"(a)\1", "back-references"),
        ("[[:nope:]]", "unknown character class"),
        ("[[:^digit:]]", "negated"),
        ("a(", "not a regular expression"),
    ]:
        with pytest.raises(ValueError, match=why):
            _mapping.compile_go(refused)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a(\nname=\"x-y\"\n\n", "line 1: not a regular expression"),
        ("a\nname=x\n\n", 'line 2: expected a label line'),
        ("a\nname=\"ab\"\nk=\"1\"\n\n", "line 3: expected a label line"),  # 2 characters or more
        ("a\nuser=\"1\"\n\n", "line 3: the mapping sets no tube name"),
        ("a\nname=\"1\"\n\n", "line 2: the tube name '1' is not an identifier"),
        ("a\nname=\"$1\"\n\n", "not an identifier"),
        ("a\nname=\"ab\"\ntube=\"x\"\n\n", "line 3: the label 'tube' is set by the exporter"),
        ("a\nname=\"ab\"\ninstance=\"x\"\n\n", "the label 'instance'"),
        ("a\nname=\"ab\"\nuser-id=\"x\"\n\n", "'user-id' is not a label name Prometheus"),
        ("a\nname=\"ab\"\n__x=\"x\"\n\n", "'__x' is not a label name"),
        ("a\nuser=\"1\"", "line 1: the mapping sets no tube name"),
        ("a\n\n", "line 2: the mapping sets no label"),
    ],
)
def test_bad_mapping_files(text: str, message: str) -> None:
    with pytest.raises(MappingError, match=re.escape(message)):
        parse_mapping(text, "m.conf")


def test_a_mapping_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read the mapping file"):
        _mapping.read_mapping(tmp_path / "missing.conf")
    (tmp_path / "latin.conf").write_bytes(b"caf\xe9\n")
    with pytest.raises(MappingError, match="cannot read"):
        _mapping.read_mapping(tmp_path / "latin.conf")
    assert _mapping.file_signature(tmp_path / "missing.conf") is None


# -- the command ------------------------------------------------------------------------


def test_the_command_serves_until_sigterm(server: ServerProcess, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.conf"
    mapping.write_text(README_MAPPING + "\n")
    command = [
        sys.executable, "-m", "greenstalk", "exporter", "-a", name_of(server.address),
        "-a", name_of(closed_port()), "--listen", "127.0.0.1:0", "--names", "messagebird",
        "--mapping-config", str(mapping), "--tubes", ".*", "--timeout", "2",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"serving (http://\S+)/metrics \(messagebird names\) for ", line)
        assert found, line
        text = scrape(found.group(1))
        assert value(text, "beanstalkd_up", instance=name_of(server.address)) == 1
        assert value(text, "beanstalkd_exporter_loaded_mappings_count") == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--listen", "nowhere:port"], "bad --listen: 'nowhere:port': the port must be"),
        (["--tubes", "("], "bad --tubes: '(' is not a regular expression"),
        (["--exclude-tubes", "[a"], "bad --exclude-tubes"),
        (["-a", "host:0"], "bad --address"),
        (["-a", "127.0.0.1:1"], "127.0.0.1:1 is listed twice"),
        (["--names", "statsd"], "names must be prometheus or messagebird"),
        (["--mapping-config", "/nonexistent/mapping.conf"], "cannot read the mapping file"),
    ],
)
def test_bad_options(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["exporter", "-a", "127.0.0.1:1", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_a_listen_address_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["exporter", "-a", "127.0.0.1:1", "--listen", f"127.0.0.1:{port}"])
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.fixture
def exporter_made(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the next ``greenstalk exporter`` run makes, instead of serving it."""
    seen: dict[str, Any] = {}

    def fake_serve(make_app: Any, listen: Any, started: Any) -> None:
        exporter = asyncio.run(make_app())[APP_KEY]
        seen["servers"] = exporter.addresses
        seen["timeout"] = exporter.timeout

    monkeypatch.setattr("greenstalk.cli._ops._serve", fake_serve)
    return seen


def test_the_global_address_and_timeout_are_used(exporter_made: dict[str, Any]) -> None:
    """``greenstalk -a X --timeout 3 exporter`` reads X, with 3 s per scrape."""
    assert main(["-a", "10.0.0.1", "--timeout", "3", "exporter"]) == 0
    assert exporter_made == {"servers": [("10.0.0.1", 11300)], "timeout": 3.0}


@pytest.mark.parametrize(
    ("arguments", "environment"),
    [
        (["exporter", "-a", "10.0.0.1", "-a", "10.0.0.2:11301"], ""),
        (["exporter", "-a", "10.0.0.1,10.0.0.2:11301"], ""),
        (["-a", "10.0.0.1", "exporter", "-a", "10.0.0.2:11301"], ""),
        (["exporter"], "10.0.0.1,10.0.0.2:11301"),
    ],
)
def test_several_servers_as_every_command_takes_them(
    exporter_made: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    environment: str,
) -> None:
    monkeypatch.setenv("BEANSTALKD_ADDRESS", environment)
    assert main(arguments) == 0
    assert exporter_made == {
        "servers": [("10.0.0.1", 11300), ("10.0.0.2", 11301)], "timeout": 5.0
    }


def test_importing_greenstalk_loads_neither_prometheus_client_nor_aiohttp() -> None:
    code = (
        "import sys, greenstalk, greenstalk.aio, greenstalk.cli, greenstalk.cli._commands, "
        "greenstalk.ops, greenstalk.ops._mapping, greenstalk.ops._scrape; "
        "loaded = [name for name in sys.modules if name.split('.')[0] in "
        "('prometheus_client', 'aiohttp')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=DEADLINE)


def test_the_commands_say_when_the_ops_extra_is_missing(tmp_path: Path) -> None:
    """Without prometheus_client or aiohttp, the commands say which extra to install."""
    for library in ("prometheus_client", "aiohttp"):
        blocker = tmp_path / library
        blocker.mkdir(exist_ok=True)
        (blocker / "__init__.py").write_text("raise ImportError('blocked', name=__name__)\n")
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for command in (["exporter"], ["web"]):
        result = subprocess.run(
            [sys.executable, "-m", "greenstalk", *command, "-a", "127.0.0.1:1"],
            capture_output=True, text=True, env=environment, timeout=DEADLINE,
        )
        assert result.returncode == 2
        assert result.stderr == (
            "greenstalk: this command needs the ops extra: pip install 'greenstalk[ops]'\n"
        )


# -- races, and statistics of later servers (a scripted server) ----------------------------


def yaml(text: str) -> bytes:
    """A YAML reply as beanstalkd writes it."""
    body = ("---\n" + text).encode()
    return b"OK %d\r\n%s\r\n" % (len(body), body)


def tube_yaml(name: str, ready: int = 0, delayed: int = 0, extra: str = "") -> str:
    return (
        f"name: {name}\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: {ready}\n"
        f"current-jobs-reserved: 0\ncurrent-jobs-delayed: {delayed}\ncurrent-jobs-buried: 0\n"
        f"total-jobs: 2\ncurrent-using: 0\ncurrent-watching: 0\ncurrent-waiting: 0\n"
        f"cmd-delete: 0\ncmd-pause-tube: 0\npause: 0\npause-time-left: 0\n{extra}"
    )


JOB_YAML = (
    "id: 6\ntube: a\nstate: delayed\npri: 1\nage: 3\ndelay: 10\nttr: 60\ntime-left: 7\n"
    "file: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\nkicks: 0\n"
)


def test_what_vanishes_during_a_scrape_is_left_out() -> None:
    """A tube gone after list-tubes, jobs gone after stats-tube or after a peek; and the
    statistics a later server may add, exported under their own names."""
    script: list[Step] = [
        Expect(b"stats\r\nlist-tubes\r\n"),
        Send(yaml("current-jobs-ready: 2\ncmd-put: 4\ncurrent-frobs: 3\nshape: round\n")),
        Send(yaml("- a\n- b\n- c\n")),
        Expect(b"stats-tube a\r\nstats-tube b\r\nstats-tube c\r\n"),
        Send(yaml(tube_yaml("a", ready=1, delayed=1, extra="current-mystery: 2\n"))),
        Send(b"NOT_FOUND\r\n"),
        Send(yaml(tube_yaml("c", ready=1))),
        Expect(b"use a\r\npeek-ready\r\npeek-delayed\r\nuse c\r\npeek-ready\r\nuse default\r\n"),
        Send(b"USING a\r\nFOUND 5 1\r\nx\r\nFOUND 6 1\r\ny\r\nUSING c\r\nNOT_FOUND\r\n"
             b"USING default\r\n"),
        Expect(b"stats-job 5\r\nstats-job 6\r\n"),
        Send(b"NOT_FOUND\r\n" + yaml(JOB_YAML)),
    ]
    with FakeServer(script) as fake:
        exporter = Exporter([fake.address])

        async def scrape_once() -> str:
            try:
                return (await exporter.exposition())[0].decode()
            finally:
                await exporter.close()

        text = asyncio.run(scrape_once())
    server = name_of(fake.address)
    assert value(text, "beanstalkd_up", server=server) == 1
    assert value(text, "beanstalkd_current_frobs", server=server) == 3
    assert "shape" not in text  # text, not a number
    assert value(text, "beanstalkd_tube_current_mystery", server=server, tube="a") == 2
    tubes = {sample.labels["tube"] for sample in families(text)["beanstalkd_tube_jobs"].samples}
    assert tubes == {"a", "c"}
    for tube in ("a", "c"):
        assert value(text, "beanstalkd_tube_oldest_ready_job_age_seconds", server=server,
                     tube=tube) is None
    assert value(text, "beanstalkd_tube_next_delayed_job_time_left_seconds", server=server,
                 tube="a") == 7


def test_a_connection_lost_during_a_scrape(caplog: pytest.LogCaptureFixture) -> None:
    script: list[Step] = [
        Expect(b"stats\r\nlist-tubes\r\n"),
        Send(yaml("current-jobs-ready: 0\n")),
        Send(yaml("- a\n")),
        Expect(b"stats-tube a\r\n"),
        Close(),
    ]
    with FakeServer(script) as fake:
        exporter = Exporter([fake.address], names="messagebird")

        async def scrape_once() -> str:
            try:
                return (await exporter.exposition())[0].decode()
            finally:
                await exporter.close()

        with caplog.at_level(logging.WARNING, "greenstalk.ops"):
            text = asyncio.run(scrape_once())
    assert value(text, "beanstalkd_up", instance=name_of(fake.address)) == 0
    assert value(text, "beanstalkd_exporter_requests_total", outcome="success") == 2
    assert value(text, "beanstalkd_exporter_requests_total", outcome="failure") == 1
    assert value(text, "current_jobs_ready", instance=name_of(fake.address)) is None
    assert "closed" in caplog.text
