"""The actors a ``dramatiq tests.dramatiq_app.tasks`` worker runs in the tests.

The broker's URL comes from ``$GREENSTALK_DRAMATIQ_URL``. ``record`` appends
its argument to the file named by ``$GREENSTALK_DRAMATIQ_OUT``, one line per
run, so a test can see which messages ran (and how often). ``noop`` does
nothing, for the benchmark.
"""

from __future__ import annotations

import os
import time

import dramatiq

from greenstalk.dramatiq import BeanstalkBroker

broker = BeanstalkBroker(url=os.environ["GREENSTALK_DRAMATIQ_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def record(index: int) -> None:
    """Append ``index`` to the output file, after a few milliseconds of "work"."""
    time.sleep(0.005)
    # O_APPEND: the lines of concurrent threads never mix.
    fd = os.open(os.environ["GREENSTALK_DRAMATIQ_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, b"%d\n" % index)
    finally:
        os.close(fd)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    """Do nothing: what a broker costs per message."""
