"""Peer job queues (Celery, arq, procrastinate) measured beside ours for `make bench`."""
