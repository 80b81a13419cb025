"""One error type for everything that fails verification, with a message naming what failed."""


class TrustError(ValueError):
    """A key, trust store, signature or signed file that does not verify."""


class KeyExists(TrustError):
    """A key file is already there: keys are never overwritten."""
