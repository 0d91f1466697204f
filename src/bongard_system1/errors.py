"""The one exception type the command line turns into a single error line and a non-zero exit."""


class System1Error(Exception):
    """A user-facing error: bad input, a missing or corrupt file, a refused operation."""
