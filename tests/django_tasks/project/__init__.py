"""The small Django project the tests run: settings and tasks."""
