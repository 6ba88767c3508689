"""Tube-name mapping files, read as messagebird/beanstalkd_exporter 1.0.5 reads them.

A file is a list of blocks. A block's first line is a regular expression
matched against tube names (anchored with ``^`` and ``$`` as written, so an
alternation is anchored on its outer ends only, as in Go); each following
line is ``label="value"``, where the value may refer to the expression's
groups as ``$1``, ``${1}``, ``$name`` or ``${name}`` (``$$`` is a dollar).
One label must be ``name``: it becomes the series' ``tube`` label. A blank
line ends a block. Lines are stripped of surrounding white space. The first
block whose expression matches a tube gives its labels; a tube that no block
matches keeps its own name as ``tube``. Every series carries every label any
block sets, empty where its block does not set it.

Two details follow 1.0.5 to the letter or refuse what it could not serve:

* 1.0.5 ends a block only at a blank line, so a last block not followed by
  one is ignored. :attr:`TubeMapper.unterminated` keeps it: the exporter
  drops it under ``--names messagebird`` (and logs that), and uses it under
  the default names.
* 1.0.5 crashes on its first scrape when a mapping file is loaded (it
  declares the ``tube`` label twice; its master branch fixed that after the
  release). What it was meant to produce, and what its master produces, is
  what this module gives. A label that would clash with the exporter's own
  (``tube``, ``instance``, ``server``) or that Prometheus would refuse
  (``user-id``, ``__x``) is refused here, when the file is read.

The expressions are Go's (RE2) syntax, compiled with Python's ``re``: the
constructs the two spell differently (``\\z``, ``\\Q...\\E``, ``[[:alpha:]]``)
are translated, and what RE2 refuses (look-around, back-references) is
refused.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

# The identifiers 1.0.5 accepts as label names and as the ``name`` value.
_IDENTIFIER = r"[a-zA-Z_-][a-zA-Z0-9_-]+"
_LABEL_LINE = re.compile(rf"^({_IDENTIFIER})\s*=\s*\"(.*)\"$")
_TUBE_NAME = re.compile(rf"^{_IDENTIFIER}$")
# What Prometheus accepts as a label name; names starting with __ are its own.
_PROMETHEUS_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_POSIX_CLASS = re.compile(r"\[:(\^?)([a-z]+):\]")
_NOT_RE2 = [
    (re.compile(r"\(\?<?[=!]"), "look-around"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]"), "back-references"),
]

RESERVED_LABELS = frozenset({"tube", "instance", "server"})
"""Labels the exporter sets itself, which a mapping may not set."""


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file and the line."""


@dataclasses.dataclass(frozen=True)
class Mapping:
    """One block: the expression, and the label templates it sets (``name`` among them)."""

    pattern: re.Pattern[str]
    templates: dict[str, str]
    #: The line of the file the expression is on (from 1).
    line: int


@dataclasses.dataclass(frozen=True)
class TubeMapper:
    """The blocks of a mapping file, and the tube labels they give."""

    mappings: tuple[Mapping, ...] = ()
    #: A last block not followed by a blank line (1.0.5 ignores it), or None.
    unterminated: Mapping | None = None

    @functools.cached_property
    def label_names(self) -> list[str]:
        """Every label some block sets, ``name`` excepted, sorted."""
        names = {label for mapping in self.mappings for label in mapping.templates}
        names.discard("name")
        return sorted(names)

    def labels(self, tube: str) -> dict[str, str]:
        """The labels of ``tube``: ``tube`` (the mapped name, or its own) and :attr:`label_names`.

        Labels the matching block does not set are empty.
        """
        found = dict.fromkeys(self.label_names, "")
        for mapping in self.mappings:
            match = mapping.pattern.search(tube)
            if match is None:
                continue
            for label, template in mapping.templates.items():
                found[label] = expand(template, match)
            found["tube"] = found.pop("name")
            return found
        found["tube"] = tube
        return found


def expand(template: str, match: re.Match[str]) -> str:
    """``template`` with ``$1``, ``${1}``, ``$name``, ``${name}`` replaced as Go's Expand does.

    A reference to a group that does not exist, or that did not take part
    in the match, gives nothing; ``$$`` gives ``$``; a ``$`` that starts no
    valid reference stays as it is.
    """
    out: list[str] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        reference = _reference(rest)
        if reference is None:
            out.append("$")
            continue
        name, rest = reference
        out.append(_group(match, name))


def _reference(text: str) -> tuple[str, str] | None:
    """The group name at the start of ``text`` (after a ``$``) and what follows it."""
    braced = text.startswith("{")
    body = text[1:] if braced else text
    end = 0
    while end < len(body) and (body[end].isalnum() or body[end] == "_"):
        end += 1
    if end == 0:
        return None
    name = body[:end]
    if braced:
        if body[end : end + 1] != "}":
            return None
        end += 1
    return name, body[end:]


def _group(match: re.Match[str], name: str) -> str:
    """The text group ``name`` (a number without leading zeros, or a name) matched, or ''."""
    index: int | str = name
    if name.isascii() and name.isdigit() and (name == "0" or not name.startswith("0")):
        index = int(name)
    try:
        return match.group(index) or ""
    except IndexError:  # no such group
        return ""


def compile_go(expression: str) -> re.Pattern[str]:
    """Compile an RE2 (Go) expression with Python's ``re``.

    Raises ValueError for what Go would refuse or Python cannot read.
    """
    for construct, what in _NOT_RE2:
        if construct.search(expression):
            raise ValueError(f"Go regular expressions have no {what}")
    translated = _translate(expression)
    try:
        return re.compile(translated, re.ASCII)
    except re.error as error:
        raise ValueError(f"not a regular expression: {error}") from None


def _translate(expression: str) -> str:
    """Spell the RE2 constructs Python writes differently in Python's way."""
    out: list[str] = []
    index = 0
    while index < len(expression):
        if expression.startswith("\\Q", index):
            end = expression.find("\\E", index + 2)
            end = len(expression) if end < 0 else end
            out.append(re.escape(expression[index + 2 : end]))
            index = end + 2
        elif expression.startswith("\\z", index):
            out.append("\\Z")
            index += 2
        elif expression[index] == "\\":
            out.append(expression[index : index + 2])
            index += 2
        elif expression.startswith("[:", index) and out and _in_class(out):
            match = _POSIX_CLASS.match(expression, index)
            if match is None or match.group(2) not in _POSIX_CLASSES:
                raise ValueError(f"unknown character class at {expression[index:]!r}")
            if match.group(1):
                raise ValueError("negated character classes ([:^x:]) are not supported")
            out.append(_POSIX_CLASSES[match.group(2)])
            index = match.end()
        else:
            out.append(expression[index])
            index += 1
    return "".join(out)


def _in_class(written: list[str]) -> bool:
    """Whether the expression written so far leaves us inside a bracketed class."""
    inside = False
    for piece in written:
        if piece == "[" and not inside:
            inside = True
        elif piece == "]" and inside:
            inside = False
    return inside


def parse_mapping(text: str, source: str = "mapping file") -> TubeMapper:
    """Read the text of a mapping file as beanstalkd_exporter 1.0.5 reads it.

    Raises :class:`MappingError`, naming ``source`` and the line (from 1),
    for a line that is neither an expression nor a label, an expression
    that does not compile, a block without labels or without ``name``, a
    ``name`` that is not an identifier, or a label name Prometheus or the
    exporter would not accept.
    """
    mappings: list[Mapping] = []
    current: tuple[re.Pattern[str], dict[str, str], int] | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if current is None:
            if not line:
                continue
            try:
                current = (compile_go("^" + line + "$"), {}, number)
            except ValueError as error:
                raise MappingError(f"{source}, line {number}: {error}") from None
            continue
        pattern, templates, first = current
        if not line:
            _check_block(templates, source, number)
            mappings.append(Mapping(pattern, templates, first))
            current = None
            continue
        found = _LABEL_LINE.match(line)
        if found is None:
            raise MappingError(
                f'{source}, line {number}: expected a label line (label="value"), got {line!r}'
            )
        label, value = found.group(1), found.group(2)
        if label == "name" and not _TUBE_NAME.match(value):
            raise MappingError(
                f"{source}, line {number}: the tube name {value!r} is not an identifier "
                "(letters, digits, _ and -; two characters or more)"
            )
        if label != "name":
            _check_label(label, source, number)
        templates[label] = value
    unterminated = None
    if current is not None:
        pattern, templates, first = current
        _check_block(templates, source, first)
        unterminated = Mapping(pattern, templates, first)
    return TubeMapper(tuple(mappings), unterminated)


def _check_block(templates: dict[str, str], source: str, number: int) -> None:
    if not templates:
        raise MappingError(f"{source}, line {number}: the mapping sets no label")
    if "name" not in templates:
        raise MappingError(f"{source}, line {number}: the mapping sets no tube name (name=...)")


def _check_label(label: str, source: str, number: int) -> None:
    if label in RESERVED_LABELS:
        raise MappingError(
            f"{source}, line {number}: the label {label!r} is set by the exporter itself "
            "(the tube's name is set with name=...)"
        )
    if not _PROMETHEUS_LABEL.match(label) or label.startswith("__"):
        raise MappingError(
            f"{source}, line {number}: {label!r} is not a label name Prometheus accepts "
            "(letters, digits and _, not starting with __)"
        )


def read_mapping(path: str | os.PathLike[str]) -> TubeMapper:
    """Read a mapping file. Raises :class:`MappingError` (OSError as one too)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise MappingError(f"cannot read the mapping file {os.fspath(path)}: {error}") from None
    return parse_mapping(text, os.fspath(path))


def file_signature(path: str | os.PathLike[str]) -> tuple[float, int] | None:
    """The modification time and size of ``path``, to notice changes; None if it is gone."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime, status.st_size
