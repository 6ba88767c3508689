"""A Celery application whose workers the tests run as real ``celery worker`` processes."""
