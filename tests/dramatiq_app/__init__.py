"""A Dramatiq application for the tests that run a real ``dramatiq`` worker process."""
