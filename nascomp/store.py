"""The run store: one SQLite file (WAL mode, one writer: the search driver) holding everything a
search has learned, so that a killed run resumes and no finished evaluation is ever repeated.

Tables
    runs         run id -> its config (JSON) and status
    evaluations  (context, key) -> f, accuracy, params, seconds, error: the cache. ``context`` hashes
                 the teacher's weights, the dataset and the proxy-training recipe, so an architecture
                 evaluated under the same conditions is never trained again, in this run or another
                 run sharing the file
    history      (run, index) -> step, kernel, key: the order in which a run evaluated (the column
                 ``kernel`` holds ``Record.proposer``, the index of the proposing kernel; its SQL
                 name is kept so that older store files stay readable)
    inflight     (run, key): evaluations started and not finished (redone on resume)
    weights      (context, key) -> proxy-trained state_dict of the current top students
    finals       (context, key) -> fully trained result and state_dict
    kernels      (run, step) -> the kernels' state_dict of that step (kernel transfer reads them)
    rng          (run, step) -> the search's random-number state before that step's proposals

Resume replays the search from its seed: evaluations come from the cache instantly, kernels are
retrained deterministically, and the first evaluation missing from the cache is where the killed
run stopped. The stored random-number states check that the replay follows the recorded run.
Tensors are stored as ``torch.save`` bytes and read back with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import torch

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL, created REAL, updated REAL);
CREATE TABLE IF NOT EXISTS evaluations (context TEXT, key TEXT, f REAL, accuracy REAL, num_params INTEGER,
    seconds REAL, error TEXT, arch TEXT, created REAL, PRIMARY KEY (context, key));
CREATE TABLE IF NOT EXISTS history (run TEXT, idx INTEGER, step INTEGER, kernel INTEGER, key TEXT, PRIMARY KEY (run, idx));
CREATE TABLE IF NOT EXISTS inflight (run TEXT, key TEXT, step INTEGER, started REAL, PRIMARY KEY (run, key));
CREATE TABLE IF NOT EXISTS weights (context TEXT, key TEXT, f REAL, state BLOB, PRIMARY KEY (context, key));
CREATE TABLE IF NOT EXISTS finals (context TEXT, key TEXT, result TEXT, state BLOB, PRIMARY KEY (context, key));
CREATE TABLE IF NOT EXISTS kernels (run TEXT, step INTEGER, state BLOB, PRIMARY KEY (run, step));
CREATE TABLE IF NOT EXISTS rng (run TEXT, step INTEGER, state TEXT, PRIMARY KEY (run, step));
"""


def digest(obj: Any) -> str:
    """A stable short hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def tensor_digest(state: dict) -> str:
    """A stable hash of a state_dict's values (e.g. the teacher's weights)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def from_bytes(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


class StoreError(RuntimeError):
    """The store cannot be used as asked (another config in it, a corrupt file)."""


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite run store ({exc}); move it away or point "
                             "store.path elsewhere") from exc

    def close(self) -> None:
        self.db.close()

    def _tx(self):
        return _Transaction(self.db)

    # ----------------------------------------------------------------- runs
    def open_run(self, run: str, config: dict, resume: bool = True) -> bool:
        """Register ``run`` with ``config``; returns True when it resumes an existing run. A run id
        already stored with another config, or any existing run when ``resume`` is false, is an error."""
        row = self.db.execute("SELECT config, status FROM runs WHERE run = ?", (run,)).fetchone()
        text = json.dumps(config, sort_keys=True, default=str)
        if row is None:
            with self._tx():
                self.db.execute("INSERT INTO runs VALUES (?, ?, 'running', ?, ?)", (run, text, time.time(), time.time()))
            return False
        if not resume:
            raise StoreError(f"{self.path} already holds run {run!r} (status {row[1]}); nothing recorded is "
                             "overwritten: resume it (store.resume=true) or choose another run directory")
        if row[0] != text:
            diff = _diff(json.loads(row[0]), config)
            raise StoreError(f"{self.path} holds run {run!r} with a different config ({'; '.join(diff[:5])}); "
                             "run with the same config to resume it, or choose another name / run directory")
        with self._tx():
            self.db.execute("UPDATE runs SET status = 'running', updated = ? WHERE run = ?", (time.time(), run))
        return True

    def finish_run(self, run: str, status: str = "finished") -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET status = ?, updated = ? WHERE run = ?", (status, time.time(), run))

    def status(self, run: str) -> str | None:
        row = self.db.execute("SELECT status FROM runs WHERE run = ?", (run,)).fetchone()
        return row[0] if row else None

    # ----------------------------------------------------------------- evaluations (the cache)
    def cached(self, context: str, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(keys)
        out = {}
        for k in keys:
            row = self.db.execute("SELECT f, accuracy, num_params, seconds, error FROM evaluations WHERE context = ? AND key = ?",
                                  (context, k)).fetchone()
            if row:
                out[k] = dict(zip(("f", "accuracy", "num_params", "seconds", "error"), row))
        return out

    def start(self, run: str, keys: Iterable[str], step: int) -> None:
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO inflight VALUES (?, ?, ?, ?)", [(run, k, step, time.time()) for k in keys])

    def inflight(self, run: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT key FROM inflight WHERE run = ? ORDER BY started", (run,))]

    def record(self, run: str, context: str, results: list[tuple[str, dict, dict]]) -> None:
        """Store finished evaluations (key, result, arch description) and clear them from inflight."""
        with self._tx():
            for key, r, arch in results:
                self.db.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (context, key, r["f"], r["accuracy"], r["num_params"], r["seconds"], r["error"],
                                 json.dumps(arch), time.time()))
                self.db.execute("DELETE FROM inflight WHERE run = ? AND key = ?", (run, key))

    def count(self, context: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE context = ?", (context,)).fetchone()[0]

    # ----------------------------------------------------------------- history
    def append_history(self, run: str, rows: list[tuple[int, int, int | None, str]]) -> None:
        """(index, step, proposer, key) rows; re-recording the same index (a replay) is a no-op."""
        with self._tx():
            self.db.executemany("INSERT OR IGNORE INTO history VALUES (?, ?, ?, ?, ?)", [(run, *r) for r in rows])

    def history(self, run: str) -> list[tuple[int, int, int | None, str]]:
        return [tuple(r) for r in self.db.execute("SELECT idx, step, kernel, key FROM history WHERE run = ? ORDER BY idx", (run,))]

    # ----------------------------------------------------------------- random-number states, kernels
    def rng_state(self, run: str, step: int) -> dict | None:
        row = self.db.execute("SELECT state FROM rng WHERE run = ? AND step = ?", (run, step)).fetchone()
        return json.loads(row[0]) if row else None

    def save_rng_state(self, run: str, step: int, state: dict) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO rng VALUES (?, ?, ?)", (run, step, json.dumps(state)))

    def save_kernels(self, run: str, step: int, state: dict) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO kernels VALUES (?, ?, ?)", (run, step, to_bytes(state)))

    def kernels(self, run: str, step: int | None = None) -> tuple[int, dict] | None:
        """The kernels of ``step`` (default: the last step that has them)."""
        q = "SELECT step, state FROM kernels WHERE run = ? " + ("AND step = ?" if step is not None else "ORDER BY step DESC LIMIT 1")
        row = self.db.execute(q, (run, step) if step is not None else (run,)).fetchone()
        return (row[0], from_bytes(row[1])) if row else None

    def latest_kernels(self) -> tuple[str, int, dict] | None:
        """(run, step, state) of the most recent run that stored kernels, preferring finished runs."""
        row = self.db.execute("SELECT k.run, MAX(k.step) FROM kernels k JOIN runs r ON r.run = k.run GROUP BY k.run "
                              "ORDER BY r.status = 'finished' DESC, r.updated DESC LIMIT 1").fetchone()
        if row is None or row[0] is None:
            return None
        step, state = self.kernels(row[0], row[1])
        return row[0], step, state

    def runs(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self.db.execute("SELECT run, status FROM runs ORDER BY created")]

    # ----------------------------------------------------------------- weights
    def save_weights(self, context: str, key: str, f: float, state: dict, keep: int) -> None:
        """Keep the proxy weights of the ``keep`` best students of this context."""
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO weights VALUES (?, ?, ?, ?)", (context, key, f, to_bytes(state)))
            self.db.execute("DELETE FROM weights WHERE context = ? AND key NOT IN (SELECT key FROM weights WHERE "
                            "context = ? ORDER BY f DESC LIMIT ?)", (context, context, keep))

    def weights(self, context: str, key: str) -> dict | None:
        row = self.db.execute("SELECT state FROM weights WHERE context = ? AND key = ?", (context, key)).fetchone()
        return from_bytes(row[0]) if row else None

    def save_final(self, context: str, key: str, result: dict, state: dict) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO finals VALUES (?, ?, ?, ?)", (context, key, json.dumps(result), to_bytes(state)))

    def final(self, context: str, key: str) -> tuple[dict, dict] | None:
        row = self.db.execute("SELECT result, state FROM finals WHERE context = ? AND key = ?", (context, key)).fetchone()
        return (json.loads(row[0]), from_bytes(row[1])) if row else None


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
