"""Generated views on disk: one append-only jsonl file per key, flushed after every batch, closed by a marker.

The key hashes everything the views depend on (dataset, model, prompts, settings, seed, the histories), so a later
run with the same inputs reuses the file, a changed input writes a new one, and an interrupted run resumes with the
clients it has not finished yet.
"""
import hashlib
import json
import os
from pathlib import Path

DEFAULT_DIR = __import__("recbole_lumos.paths").paths.CACHE_ROOT / "views"  # <checkout or cwd>/.cache (paths.py)


def cache_key(**parts):
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ViewCache:
    def __init__(self, key, directory=None, name="views"):
        self.path = Path(directory or DEFAULT_DIR).absolute() / f"{name}-{key[:24]}.jsonl"

    def load(self):
        """{str(client id): record} of the finished clients, and whether the run was complete."""
        if not self.path.exists():
            return {}, False
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # killed mid-write: drop the torn last line before appending again
            data = data[: data.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(data))
        records, complete = {}, False
        for line in data.decode("utf-8").splitlines():
            record = json.loads(line)
            if record.get("done"):
                complete = True
            else:
                records[str(record["client"])] = record
        return records, complete

    def append(self, records):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())

    def finish(self, count):
        self.append([{"done": True, "clients": count}])
