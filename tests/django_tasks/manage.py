#!/usr/bin/env python
"""The test project's manage.py: ``python tests/django_tasks/manage.py greenstalk_worker``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The repository's root, where the tests package is.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_tasks.project.settings")

from django.core.management import execute_from_command_line

if __name__ == "__main__":
    execute_from_command_line(sys.argv)
