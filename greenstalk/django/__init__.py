"""Django's Tasks framework (``django.tasks``, Django 6.0+) on beanstalkd.

``TASKS = {"default": {"BACKEND": "greenstalk.django.BeanstalkBackend"}}``
enqueues tasks as beanstalkd jobs; with ``"greenstalk.django"`` in
``INSTALLED_APPS``, ``python manage.py greenstalk_worker`` runs them. See
:mod:`greenstalk.django.backend` and :mod:`greenstalk.django.worker`.
"""

from __future__ import annotations

from .backend import BeanstalkBackend

__all__ = ["BeanstalkBackend"]
