"""Sphinx configuration for the greenstalk documentation.

HTML: ``.venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html``

The examples in the pages are doctests. To run them against real beanstalkd
processes, which the pages start on free ports:
``.venv/bin/sphinx-build -W --keep-going -b doctest docs docs/_build/doctest``

Only Sphinx's own extensions and theme are used: the build needs no network.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Document the package of this checkout, even when it is not installed.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import greenstalk

project = "greenstalk"
author = "the greenstalk authors"
copyright = "the greenstalk authors"
release = greenstalk.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]
pygments_style = "sphinx"
highlight_language = "python3"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}

# The examples connect to ('127.0.0.1', 11300), as a reader would. A page's
# hidden set-up enters _server_for_examples(): a fresh beanstalkd on a free
# port, with Client pointed at it for that address, so the examples run as
# written whether or not port 11300 is taken.
doctest_global_setup = """
import contextlib as _contextlib

import greenstalk
from greenstalk.testing import run_beanstalkd as _run_beanstalkd


@_contextlib.contextmanager
def _server_for_examples(*args):
    real_client = greenstalk.Client
    with _run_beanstalkd(args=args) as server:
        def client(address, *rest, **options):
            if address == ('127.0.0.1', 11300):
                address = server.address
            return real_client(address, *rest, **options)

        greenstalk.Client = client
        try:
            yield server
        finally:
            greenstalk.Client = real_client
"""

html_theme = "alabaster"
html_theme_options = {
    "description": "A fast, careful Python client for the beanstalkd work queue.",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
html_show_sourcelink = False


def _list_typeddict_keys(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Append a table of keys and value types to the docs of a TypedDict.

    The stats shapes are functional TypedDicts whose keys are not attributes,
    so autodoc would not show them. Generating the table keeps it in step
    with the code.
    """
    keys = getattr(obj, "__annotations__", None)
    if what != "class" or not isinstance(obj, type) or not issubclass(obj, dict) or not keys:
        return
    lines.extend(["", ".. list-table::", "   :header-rows: 1", "", "   * - Key", "     - Type"])
    for key, kind in keys.items():
        type_name = kind if isinstance(kind, str) else getattr(kind, "__name__", repr(kind))
        lines.extend([f"   * - ``{key}``", f"     - ``{type_name}``"])
    lines.append("")


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _list_typeddict_keys)
