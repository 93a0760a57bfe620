"""Errors that steer the consumer's retry policy (see shared.consumer)."""


class PermanentError(Exception):
    """The message can never succeed: dead-letter it now."""


class TransientError(Exception):
    """A dependency is down: retry with backoff until the transient deadline."""
