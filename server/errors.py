"""The coordinator's one failure type."""


class FederationError(RuntimeError):
    """The federation cannot proceed; the message says which institution and why."""
