"""Settings of the test project.

The server comes from ``$GREENSTALK_DJANGO_ADDRESS`` (the tests start one
and hand its address to the worker they run).
"""

from __future__ import annotations

import os

SECRET_KEY = "greenstalk-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["greenstalk.django"]
DATABASES: dict[str, dict[str, str]] = {}
TASKS = {
    "default": {
        "BACKEND": "greenstalk.django.BeanstalkBackend",
        "QUEUES": ["default", "other"],
        "OPTIONS": {"address": os.environ.get("GREENSTALK_DJANGO_ADDRESS", "127.0.0.1:11300")},
    },
}
