"""Errors that are the user's to fix: the CLI prints them as one clear message, no traceback."""


class ZooframeError(Exception):
    """Base of the errors zooframe reports to users."""


class ConfigError(ZooframeError):
    """A configuration that does not validate; ``problems`` holds one ``path: message`` per error."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n" + "\n".join(f"  {p}" for p in problems))


class PluginError(ZooframeError):
    """A plugin that cannot be registered or found."""


class DuplicateKindError(PluginError):
    """Two providers registered the same ``kind`` in one category."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message: a tracker's or Ray's errors run to pages, the first
    line says what happened."""
    return (str(exc).splitlines() or [""])[0]
