"""Container logs: Docker's json-file and none drivers.

The writer runs in each container's monitor process; the reader serves the daemon's
`logs` endpoint. See config.py (LogConfig), writer.py, reader.py, files.py, record.py.
"""

from kobako.engine.logs.config import DEFAULT_JSON_FILE_OPTS, LogConfig, parse_size
from kobako.engine.logs.files import log_usage, remove_logs
from kobako.engine.logs.writer import JsonFileWriter, NullWriter, open_writer

STDOUT = 1
STDERR = 2


def __getattr__(name: str):
    # The reader (and asyncio) only in the daemon: monitors import just the writer.
    if name == "read_logs":
        from kobako.engine.logs.reader import read_logs
        return read_logs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_JSON_FILE_OPTS",
    "STDERR",
    "STDOUT",
    "JsonFileWriter",
    "LogConfig",
    "NullWriter",
    "log_usage",
    "open_writer",
    "parse_size",
    "read_logs",
    "remove_logs",
]
