"""The app that brings the ``greenstalk_worker`` management command."""

from __future__ import annotations

from django.apps import AppConfig


class GreenstalkConfig(AppConfig):
    """``greenstalk.django`` in ``INSTALLED_APPS``: the ``greenstalk_worker`` command."""

    name = "greenstalk.django"
    # Not "django", the last part of its name.
    label = "greenstalk"
    verbose_name = "greenstalk (beanstalkd tasks)"
