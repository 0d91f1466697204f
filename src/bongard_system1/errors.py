"""The one exception type the command line turns into a single error line and a non-zero exit."""


class System1Error(Exception):
    """A user-facing error: bad input, a missing or corrupt file, a refused operation."""


class DatasetDamaged(System1Error):
    """A finished dataset that is not what its files record, and cannot be repaired in place:
    ``cause`` says what, without the advice for ``system1 generate`` that the message adds."""

    def __init__(self, cause: str, advice: str = ""):
        super().__init__(f"dataset check failed: {cause}" + (f"; {advice}" if advice else ""))
        self.cause = cause


def run_guarded(func, *args) -> int:
    """Call a command's function: a System1Error (or an OSError: a full disk, an unwritable path)
    becomes one ``error: ...`` line and exit status 2."""
    import sys
    try:
        return int(func(*args) or 0)
    except System1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:          # output piped into `head` and the like
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:           # a full disk, a file or folder that cannot be written or read
        print(f"error: {os_error_text(exc)}", file=sys.stderr)
        return 2


def os_error_text(exc: OSError) -> str:
    """``No space left on device (path)``: the system's words and the file, where it names one."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"{exc.strerror or exc}{where}"
