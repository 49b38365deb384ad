"""tracker: serial GPS and fitness sensors into a durable SQLite queue, pushed to live tracking."""

# A constant, not importlib.metadata (about 95 ms of CPU at every start on a Pi Zero);
# tests/test_imports.py keeps it equal to pyproject.toml's version.
__version__ = "0.1.0"
