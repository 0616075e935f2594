"""Generated views on disk: one append-only jsonl file per generator configuration, a record per client.

The file is named by a hash of everything that shapes every client's views (prompt, the LLM weights' content,
settings, seed, the catalogue text); each record is keyed by a hash of that and of the client's own id and
history. So a later run reuses every record whose client is unchanged, one changed history regenerates that client
alone, and an interrupted run resumes with the clients it has not finished yet. Records are flushed per batch.
Runs that share a file (a benchmark's parallel workers) take turns on it with an advisory lock (POSIX flock).
"""
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; one run per cache file there
    fcntl = None

from recbole_lumos.paths import CACHE_ROOT

DEFAULT_DIR = CACHE_ROOT / "views"


@contextmanager
def _exclusive(f):
    """One writer (or torn-line truncater) at a time, so that two runs' batches never interleave in the file."""
    if fcntl:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
        yield f
    finally:
        if fcntl:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cache_key(**parts):
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ViewCache:
    def __init__(self, key, directory=None, name="views"):
        self.key = key
        self.path = Path(directory or DEFAULT_DIR).absolute() / f"{name}-{key[:24]}.jsonl"

    def client_key(self, client, history):
        return cache_key(config=self.key, client=str(client), history=[int(i) for i in history])

    def load(self):
        """{client key: record} of every client generated so far under this configuration."""
        if not self.path.exists():
            return {}
        with open(self.path, "rb") as f, _exclusive(f):  # not while another run is mid-batch
            data = f.read()
            if data and not data.endswith(b"\n"):  # killed mid-write: drop the torn last line before appending
                data = data[: data.rfind(b"\n") + 1]
                os.truncate(self.path, len(data))
        records = (json.loads(line) for line in data.decode("utf-8").splitlines())
        return {record["key"]: record for record in records}

    def append(self, records):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f, _exclusive(f):
            f.write("".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
