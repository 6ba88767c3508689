"""One client connection of the server, with no I/O: bytes in, replies out.

:class:`Connection` reads commands with the protocol core's
:class:`~greenstalk._protocol.incoming.CommandReader` and
:func:`~greenstalk._protocol.incoming.parse_command`, runs them on the
:class:`~greenstalk.server.state.ServerState`, and hands the replies to a
``send`` callback, one call per batch of commands. Like beanstalkd, it runs
one command at a time and reads nothing more while a reserve waits.

Replies are batched for speed (one ``send`` for up to 64 small ones), but
their bytes are budgeted: once the replies gathered carry more than
:data:`OUTPUT_BUDGET` bytes they are handed over at once, and the transport
sets :attr:`Connection.blocked` while more than that is left unsent, so a
peer that never reads costs about one reply, as in beanstalkd.
"""

from __future__ import annotations

import os
import platform
import resource
from collections.abc import Iterable
from typing import Callable

from .._protocol import outgoing
from .._protocol.incoming import (
    BAD_FORMAT,
    NO_CRLF,
    OVERLONG,
    CommandError,
    CommandReader,
    Op,
    parse_command,
)
from .._protocol.stats import Stats, StatsJob, StatsTube, StatValue
from .job import STATE_NAMES, Job, JobState
from .state import SECOND, LogFullError, ServerState, Session, Tube

Send = Callable[[bytes], None]
_REPLIES_PER_SEND = 64
OUTPUT_BUDGET = 65536
"""Bytes of replies a connection may hold unsent before its commands stop running."""
# A put waiting for its body: job id, body size, priority, delay, TTR.
PendingPut = tuple[int, int, int, int, int]

VERSION = "1.12"

# Ops whose count appears in ``stats``; the others are counted but never shown.
_SHOWN_OPS = (
    Op.PUT,
    Op.PEEK,
    Op.PEEK_READY,
    Op.PEEK_DELAYED,
    Op.PEEK_BURIED,
    Op.RESERVE,
    Op.RESERVE_WITH_TIMEOUT,
    Op.DELETE,
    Op.RELEASE,
    Op.USE,
    Op.WATCH,
    Op.IGNORE,
    Op.BURY,
    Op.KICK,
    Op.TOUCH,
    Op.STATS,
    Op.STATS_JOB,
    Op.STATS_TUBE,
    Op.LIST_TUBES,
    Op.LIST_TUBE_USED,
    Op.LIST_TUBES_WATCHED,
    Op.PAUSE_TUBE,
)


class ServerInfo:
    """What ``stats`` reports about the process: fixed at start, except CPU times."""

    def __init__(self, server_id: str, binlog_max_size: int) -> None:
        uname = os.uname()
        self.pid = os.getpid()
        self.server_id = server_id
        self.hostname = uname.nodename
        self.os = uname.version
        self.platform = platform.machine()
        self.binlog_max_size = binlog_max_size
        #: Counts of commands by op, as ``stats`` shows them.
        self.command_counts = dict.fromkeys(Op, 0)


class Connection:
    """The protocol state of one client connection.

    ``send`` gets the bytes to write. ``resume_soon`` is called when
    commands are left buffered that can run now: after a waiting reserve
    has ended, or after a batch of large replies, so that other connections
    get their turn. The transport should call :meth:`process` soon, outside
    the current call stack. ``before_reply``, if given, runs before each
    batch of replies is sent (the binlog is flushed there).
    """

    def __init__(
        self,
        state: ServerState,
        info: ServerInfo,
        send: Send,
        resume_soon: Callable[[], None],
        before_reply: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.info = info
        self._send = send
        self._resume_soon = resume_soon
        self._before_reply = before_reply
        self._counts = info.command_counts
        self._reader = CommandReader()
        self._replies: list[bytes] = []
        # Bytes of the gathered replies that carry a job body or a list, the
        # only ones of unbounded size; the others are short and at most 64.
        self._gathered = 0
        self.session: Session = state.open_session(self._woken)
        #: True once ``quit`` was read or the connection was closed.
        self.closed = False
        #: Set by the transport while more than :data:`OUTPUT_BUDGET` bytes of
        #: replies are unsent: run no more commands until the peer takes them.
        self.blocked = False
        # A put whose body is still awaited, and how much of an oversized body is left to drop.
        self._body: PendingPut | None = None
        self._discarding = 0

    @property
    def waiting(self) -> bool:
        """True while the connection is blocked in a reserve."""
        return self.session.waiting

    @property
    def buffered(self) -> int:
        """Bytes received and not yet processed."""
        return self._reader.buffered

    def receive(self, data: bytes | memoryview) -> None:
        """Take bytes from the peer and answer every complete command.

        ``data`` is copied: the caller may reuse its buffer afterwards.
        """
        if not (self.session.waiting or self.blocked or self.closed):
            if self._body is None and not self._discarding:
                data = bytes(data)
                line = self._reader.whole_line(data)
                if line is not None:
                    # One command and nothing buffered: run it and answer at once.
                    reply = self._run(line)
                    if reply is not None:
                        self._hand_over(reply)
                    return
            self._reader.feed(data)
            self.process()
        else:
            self._reader.feed(data)

    def process(self) -> None:
        """Run the buffered commands until one waits or more bytes are needed.

        It stops early while :attr:`blocked`, and after handing over more than
        :data:`OUTPUT_BUDGET` bytes of replies, calling ``resume_soon`` then.
        """
        session = self.session
        replies = self._replies
        next_line = self._reader.next_line
        run = self._run
        while not (self.closed or session.waiting or self.blocked):
            if self._body is not None:
                reply = self._finish_put(self._body)
                if reply is None:
                    break
            elif self._discarding:
                reply = self._discard()
                if reply is None:
                    break
            else:
                line = next_line()
                if line is None:
                    break
                reply = BAD_FORMAT if line is OVERLONG else run(line)
                if reply is None:
                    continue
            replies.append(reply)
            if len(replies) >= _REPLIES_PER_SEND or self._gathered > OUTPUT_BUDGET:
                # Hand the replies over, so that a peer not reading them can
                # block us (see ``blocked``) before more pile up.
                large = self._gathered > OUTPUT_BUDGET
                self.flush()
                if large and not self.blocked:
                    # Large replies cost time too: let other connections run.
                    self._resume_soon()
                    return
        self.flush()

    def flush(self) -> None:
        """Send the replies gathered so far, after the binlog has them."""
        replies = self._replies
        if replies:
            data = b"".join(replies) if len(replies) > 1 else replies[0]
            replies.clear()
            self._hand_over(data)

    def _hand_over(self, data: bytes) -> None:
        """Send replies, once the binlog has the records of the changes before them."""
        if self._before_reply is not None:
            self._before_reply()
        self._gathered = 0
        self._send(data)

    def _woken(self, reply: bytes) -> None:
        self._replies.append(reply)
        if not self.closed:
            self.flush()
            self._resume_soon()

    def peer_closed_write(self) -> None:
        """The peer shut down its sending side: a waiting reserve gets TIMED_OUT."""
        self.state.end_wait(self.session)

    def close(self) -> None:
        """The connection is gone: release its reserved jobs and drop what it holds.

        What it was sent and the replies not yet handed over are freed, and
        the references to the transport are cut (the state cuts the
        session's to us), so that reference counting alone frees the
        connection.
        """
        self._end()
        self._reader = CommandReader()
        self._replies.clear()
        self._gathered = 0
        self._body = None
        self._discarding = 0
        self._send = _ignore
        self._resume_soon = _nothing

    def _end(self) -> None:
        if not self.closed:
            self.closed = True
            self.state.close_session(self.session)

    # Commands

    def _run(self, line: bytes) -> bytes | None:
        try:
            op, args = parse_command(line)
        except CommandError as error:
            if error.counted and error.op is not None:
                self.info.command_counts[error.op] += 1
            return error.reply
        self._counts[op] += 1
        try:
            return _HANDLERS[op](self, *args)
        except LogFullError:
            # Nothing was changed. beanstalkd answers a bury it cannot log so.
            return outgoing.INTERNAL_ERROR if op is Op.BURY else outgoing.OUT_OF_MEMORY

    def _put(self, priority: int, delay: int, ttr: int, size: int, clean: bool) -> bytes | None:
        if size > self.state.max_job_size:
            self._discarding = size + 2
            return self._discard()
        if not clean:
            return BAD_FORMAT
        self.state.set_producer(self.session)
        pending = self._body = (self.state.take_id(), size, priority, delay, ttr)
        return self._finish_put(pending)

    def _finish_put(self, pending: PendingPut) -> bytes | None:
        """Store the awaited put's job once its body is in: the reply, or None until then."""
        job_id, size, priority, delay, ttr = pending
        body = self._reader.take_body(size)
        if body is None:
            return None
        self._body = None
        if body is NO_CRLF:
            return outgoing.EXPECTED_CRLF
        if self.state.draining:
            return outgoing.DRAINING
        try:
            self.state.put(self.session, job_id, priority, delay, ttr, body)
        except LogFullError:
            return outgoing.OUT_OF_MEMORY
        return outgoing.inserted(job_id)

    def _discard(self) -> bytes | None:
        """Drop what is in of an oversized body: JOB_TOO_BIG once all of it is, else None."""
        self._discarding -= self._reader.skip(self._discarding)
        return None if self._discarding else outgoing.JOB_TOO_BIG

    def _reserve(self) -> bytes | None:
        return self._reserve_with_timeout(None)

    def _reserve_with_timeout(self, timeout: int | None) -> bytes | None:
        result = self.state.reserve(self.session, timeout)
        if isinstance(result, Job):
            reply = outgoing.reserved(result.id, result.body)
            self._gathered += len(reply)
            return reply
        return result

    def _reserve_job(self, job_id: int) -> bytes:
        job = self.state.reserve_job(self.session, job_id)
        if job is None:
            return outgoing.NOT_FOUND
        reply = outgoing.reserved(job.id, job.body)
        self._gathered += len(reply)
        return reply

    def _delete(self, job_id: int) -> bytes:
        return outgoing.DELETED if self.state.delete(self.session, job_id) else outgoing.NOT_FOUND

    def _release(self, job_id: int, priority: int, delay: int) -> bytes:
        done = self.state.release(self.session, job_id, priority, delay)
        return outgoing.RELEASED if done else outgoing.NOT_FOUND

    def _bury(self, job_id: int, priority: int) -> bytes:
        done = self.state.bury(self.session, job_id, priority)
        return outgoing.BURIED if done else outgoing.NOT_FOUND

    def _touch(self, job_id: int) -> bytes:
        return outgoing.TOUCHED if self.state.touch(self.session, job_id) else outgoing.NOT_FOUND

    def _kick(self, bound: int) -> bytes:
        return outgoing.kicked(self.state.kick(self.session, bound))

    def _kick_job(self, job_id: int) -> bytes:
        return outgoing.KICKED if self.state.kick_job(job_id) else outgoing.NOT_FOUND

    def _found(self, job: Job | None) -> bytes:
        if job is None:
            return outgoing.NOT_FOUND
        reply = outgoing.found(job.id, job.body)
        self._gathered += len(reply)
        return reply

    def _peek(self, job_id: int) -> bytes:
        return self._found(self.state.job(job_id))

    def _peek_ready(self) -> bytes:
        return self._found(self.state.peek_ready(self.session))

    def _peek_delayed(self) -> bytes:
        return self._found(self.state.peek_delayed(self.session))

    def _peek_buried(self) -> bytes:
        return self._found(self.state.peek_buried(self.session))

    def _stats_job(self, job_id: int) -> bytes:
        job = self.state.job(job_id)
        return outgoing.NOT_FOUND if job is None else outgoing.ok(_job_stats(self.state, job))

    def _stats_tube(self, name: bytes) -> bytes:
        data = _tube_stats(self.state, name)
        return outgoing.NOT_FOUND if data is None else outgoing.ok(data)

    def _stats(self) -> bytes:
        return outgoing.ok(self.stats())

    def _use(self, name: bytes) -> bytes:
        self.state.use(self.session, name)
        return outgoing.using(name)

    def _watch(self, name: bytes) -> bytes:
        return outgoing.watching(self.state.watch(self.session, name))

    def _ignore(self, name: bytes) -> bytes:
        count = self.state.ignore(self.session, name)
        return outgoing.NOT_IGNORED if count is None else outgoing.watching(count)

    def _list_tubes(self) -> bytes:
        return self._names(self.state.iter_tubes())

    def _list_tubes_watched(self) -> bytes:
        return self._names(self.session.watched)

    def _names(self, tubes: Iterable[Tube]) -> bytes:
        reply = outgoing.ok(outgoing.list_yaml(tube.name for tube in tubes))
        self._gathered += len(reply)
        return reply

    def _list_tube_used(self) -> bytes:
        return outgoing.using(self.session.use.name)

    def _pause_tube(self, name: bytes, delay: int) -> bytes:
        return outgoing.PAUSED if self.state.pause_tube(name, delay) else outgoing.NOT_FOUND

    def _quit(self) -> None:
        # The replies before it still go out; the transport calls close() later.
        self._end()

    def stats(self) -> bytes:
        """The YAML of ``stats``."""
        state = self.state
        info = self.info
        counts = info.command_counts
        usage = resource.getrusage(resource.RUSAGE_SELF)
        binlog = state.binlog
        values: dict[str, StatValue] = {
            "current-jobs-urgent": state.urgent_count,
            "current-jobs-ready": state.ready_count,
            "current-jobs-reserved": state.reserved_count,
            "current-jobs-delayed": state.delayed_count,
            "current-jobs-buried": state.buried_count,
        }
        values.update((f"cmd-{op.value}", counts[op]) for op in _SHOWN_OPS)
        values.update(
            {
                "job-timeouts": state.job_timeouts,
                "total-jobs": state.total_jobs,
                "max-job-size": state.max_job_size,
                "current-tubes": len(state.tubes),
                "current-connections": state.current_connections,
                "current-producers": state.producers,
                "current-workers": state.workers,
                "current-waiting": state.waiting_count,
                "total-connections": state.total_connections,
                "pid": info.pid,
                "version": VERSION,
                "rusage-utime": usage.ru_utime,
                "rusage-stime": usage.ru_stime,
                "uptime": (state.clock() - state.started_at) // SECOND,
                "binlog-oldest-index": binlog.oldest_index if binlog else 0,
                "binlog-current-index": binlog.current_index if binlog else 0,
                "binlog-records-migrated": binlog.records_migrated if binlog else 0,
                "binlog-records-written": binlog.records_written if binlog else 0,
                "binlog-max-size": info.binlog_max_size,
                "draining": state.draining,
                "id": info.server_id,
                "hostname": info.hostname,
                "os": info.os,
                "platform": info.platform,
            }
        )
        return outgoing.stats_yaml(Stats, values)


def _job_stats(state: ServerState, job: Job) -> bytes:
    now = state.clock()
    timed = job.state in (JobState.RESERVED, JobState.DELAYED)
    values: dict[str, StatValue] = {
        "id": job.id,
        "tube": job.tube.name.decode("ascii"),
        "state": STATE_NAMES[job.state],
        "pri": job.priority,
        "age": (now - job.created_at) // SECOND,
        "delay": job.delay,
        "ttr": job.ttr,
        "time-left": _seconds_left(job.deadline_at, now) if timed else 0,
        "file": job.file,
        "reserves": job.reserves,
        "timeouts": job.timeouts,
        "releases": job.releases,
        "buries": job.buries,
        "kicks": job.kicks,
    }
    return outgoing.stats_yaml(StatsJob, values)


def _seconds_left(deadline: int, now: int) -> int:
    """C's truncating division: a deadline just past shows 0, not -1."""
    left = deadline - now
    return left // SECOND if left >= 0 else -(-left // SECOND)


def _tube_stats(state: ServerState, name: bytes) -> bytes | None:
    tube = state.tubes.get(name)
    if tube is None:
        return None
    now = state.clock()
    values: dict[str, StatValue] = {
        "name": name.decode("ascii"),
        "current-jobs-urgent": tube.urgent_count,
        "current-jobs-ready": tube.ready_count,
        "current-jobs-reserved": tube.reserved_count,
        "current-jobs-delayed": tube.delayed_count,
        "current-jobs-buried": len(tube.buried),
        "total-jobs": tube.total_jobs,
        "current-using": tube.using,
        "current-watching": tube.watching,
        "current-waiting": len(tube.waiting),
        "cmd-delete": tube.cmd_delete,
        "cmd-pause-tube": tube.cmd_pause_tube,
        "pause": tube.pause // SECOND,
        "pause-time-left": _seconds_left(tube.unpause_at, now) if tube.pause else 0,
    }
    return outgoing.stats_yaml(StatsTube, values)


def _ignore(_: bytes) -> None:
    pass


def _nothing() -> None:
    pass


# The method that runs each op: "_" and the op's name with "-" as "_".
_HANDLERS: dict[Op, Callable[..., bytes | None]] = {
    op: getattr(Connection, "_" + op.value.replace("-", "_")) for op in Op
}
