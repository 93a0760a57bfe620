"""Real servers for tests and benchmarks: Kafka/Tansu, Dovecot, PostgreSQL, SMTP sinks.

Each module has a class with start()/stop()/close() that is also a context manager; see
tests/conftest.py for the pytest fixtures built on them.
"""
