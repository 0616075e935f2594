"""Generated views on disk: one append-only jsonl file per generator configuration, a record per client.

The file is named by a hash of everything that shapes every client's views (prompt, the LLM weights' content,
settings, seed, the catalogue text); each record is keyed by a hash of that and of the client's own id and
history. So a later run reuses every record whose client is unchanged, one changed history regenerates that client
alone, and an interrupted run resumes with the clients it has not finished yet. Records are flushed per batch.
"""
import hashlib
import json
import os
from pathlib import Path

from recbole_lumos.paths import CACHE_ROOT

DEFAULT_DIR = CACHE_ROOT / "views"


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
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # killed mid-write: drop the torn last line before appending again
            data = data[: data.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(data))
        records = (json.loads(line) for line in data.decode("utf-8").splitlines())
        return {record["key"]: record for record in records}

    def append(self, records):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
