"""How kombu's names become beanstalkd tubes, and what a message's headers mean for its job.

Pure functions, no I/O. A queue is a tube; kombu's names may hold characters
beanstalkd refuses in a tube name (Celery's ``celery@host.celery.pidbox``), so
they are escaped. A binding that other processes must see (fanout above all)
is the name of a tube its process keeps watched: ``;b;KIND;EXCHANGE;KEY;QUEUE``
after the prefix. The tube of a reserving connection's wake-ups is
``;w;TOKEN`` after the prefix.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import NamedTuple

# The characters a beanstalkd tube name may hold; a name is 1 to 200 bytes
# and does not start with a hyphen.
_TUBE = re.compile(r"[A-Za-z0-9+/;.$_()-]{1,200}")
MAX_TUBE = 200

# Kept as they are in an escaped name: the tube characters but ";" (which
# separates the parts of a binding's tube) and "$" (the escape).
_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/._()-")
_ESCAPED = re.compile(r"\$([0-9A-F]{2})")

BINDING_MARK = ";b;"
WAKE_MARK = ";w;"

# Exchange types by the letter their bindings' tubes carry.
KINDS = {"direct": "d", "topic": "t", "fanout": "f"}
_KIND_NAMES = {letter: name for name, letter in KINDS.items()}

MAX_PRIORITY = 2**32 - 1
MAX_DELAY = 2**32 - 1


class Binding(NamedTuple):
    """A binding read back from its tube's name."""

    kind: str
    exchange: str
    routing_key: str
    queue: str


def escape(name: str) -> str:
    """``name`` with every character a tube cannot hold (and ``;``, ``$``) as ``$XX`` per byte."""
    if all(character in _KEPT for character in name):
        return name
    return "".join(
        character
        if character in _KEPT
        else "".join(f"${byte:02X}" for byte in character.encode("utf-8"))
        for character in name
    )


def unescape(text: str) -> str:
    """Undo :func:`escape`. Raises ValueError for bytes that are not UTF-8."""
    if "$" not in text:
        return text
    raw = bytearray()
    position = 0
    for match in _ESCAPED.finditer(text):
        raw += text[position : match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        position = match.end()
    raw += text[position:].encode("ascii")
    return raw.decode("utf-8")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if tube names can start with it.

    Raises ValueError for characters beanstalkd refuses, a leading hyphen, or
    a prefix that leaves no room for names; TypeError for a non-str.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"tube_prefix must be a str, not {type(prefix).__name__}")
    if prefix and (_TUBE.fullmatch(prefix) is None or prefix.startswith("-")):
        raise ValueError(
            f"tube_prefix {prefix!r} is not the start of a beanstalkd tube name: use letters, "
            "digits and - + / ; . $ _ ( ), not starting with a hyphen"
        )
    if len(prefix) > MAX_TUBE - 40:
        raise ValueError(f"tube_prefix {prefix!r} is too long: at most {MAX_TUBE - 40} bytes")
    return prefix


def _checked(tube: str, what: str) -> str:
    if len(tube) > MAX_TUBE:
        raise ValueError(
            f"{what} needs a tube name of {len(tube)} bytes once escaped ({tube!r}); beanstalkd "
            f"allows {MAX_TUBE}"
        )
    return tube


def queue_tube(prefix: str, queue: str) -> str:
    """The tube of ``queue``. Raises ValueError when it would be empty or longer than 200 bytes."""
    if not queue and not prefix:
        raise ValueError("a queue needs a name: beanstalkd has no tube named ''")
    name = escape(queue)
    if not prefix and name.startswith("-"):
        name = "$2D" + name[1:]
    return _checked(prefix + name, f"queue {queue!r}")


def binding_tube(prefix: str, kind: str, exchange: str, routing_key: str, queue: str) -> str:
    """The tube whose existence tells other processes that ``queue`` is bound.

    Raises ValueError for an exchange type other than direct, topic or
    fanout, or a name longer than 200 bytes.
    """
    letter = KINDS.get(kind)
    if letter is None:
        raise ValueError(f"exchange type {kind!r} is not supported: direct, topic or fanout")
    parts = (letter, escape(exchange), escape(routing_key), escape(queue))
    return _checked(
        prefix + BINDING_MARK + ";".join(parts),
        f"the binding of queue {queue!r} to exchange {exchange!r} (key {routing_key!r})",
    )


def parse_binding(prefix: str, tube: str) -> Binding | None:
    """The binding a tube stands for, or None if the tube is not a binding's."""
    head = prefix + BINDING_MARK
    if not tube.startswith(head):
        return None
    parts = tube[len(head) :].split(";")
    if len(parts) != 4 or parts[0] not in _KIND_NAMES:
        return None
    try:
        exchange, routing_key, queue = (unescape(part) for part in parts[1:])
    except ValueError:
        return None
    return Binding(_KIND_NAMES[parts[0]], exchange, routing_key, queue)


def wake_tube(prefix: str, token: str) -> str:
    """The tube a reserving connection watches to be woken up."""
    return prefix + WAKE_MARK + token


def is_wake_tube(prefix: str, tube: str) -> bool:
    """True for the tube of some reserving connection's wake-ups."""
    return tube.startswith(prefix + WAKE_MARK)


def check_priority(priority: object, what: str = "priority") -> int:
    """Return ``priority`` as a beanstalkd priority (0, most urgent, to 2**32-1).

    Raises TypeError for a non-int (bools included) and ValueError when out of range.
    """
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"{what} must be an int from 0 to {MAX_PRIORITY}, not {priority!r}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(
            f"{what} must be from 0 (most urgent) to {MAX_PRIORITY}, not {priority}"
        )
    return priority


def delay_until(eta: object, now: datetime | None = None) -> int:
    """Whole seconds from ``now`` until ``eta`` (Celery's ISO 8601 ``eta`` header), at least 0.

    Rounded down: the worker waits out the fraction itself. An ``eta``
    without a time zone, or one that does not parse, gives 0: the message
    is delivered at once and the worker holds it until it is due, as on
    any other broker.
    """
    if not isinstance(eta, str):
        return 0
    try:
        when = datetime.fromisoformat(eta.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        return 0
    seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(math.floor(seconds), 0), MAX_DELAY)
