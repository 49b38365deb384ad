"""tracker: serial GPS and fitness sensors into a durable SQLite queue, pushed to live tracking."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tracker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"
