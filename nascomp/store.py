"""The run store: one SQLite file (WAL mode, one writer: the search driver) holding everything a
search has learned, so that a killed run resumes and no finished evaluation is ever repeated.

Tables
    runs         run id -> its config (JSON) and status
    evaluations  (context, key) -> f, accuracy, params, seconds, error, and the other costs (flops,
                 latency_ms, memory_mb; columns added to older files when opened, NULL in their old
                 rows): the cache. ``context`` hashes the teacher's weights, the dataset, the
                 proxy-training recipe and a non-default objective, so an architecture evaluated under
                 the same conditions is never trained again, in this run or another run sharing the file.
                 Transient failures (``Evaluation.transient``) are not in it; the failures older
                 versions stored here, transient or not, stay and are shared as before
    failures     (run, context, key) -> the columns of ``evaluations``: a run's transient failures (out
                 of memory, a timeout, a Ray worker, node or object lost), kept for that run only, so
                 its replay meets them where it did while other runs sharing the file evaluate those
                 architectures again (added to older files when opened)
    history      (run, index) -> step, kernel, key: the order in which a run evaluated (the column
                 ``kernel`` holds ``Record.proposer``, the index of the proposing kernel; its SQL
                 name is kept so that older store files stay readable)
    inflight     (run, key): evaluations started and not finished (redone on resume; a transient
                 failure is finished, in ``failures``)
    weights      (context, key) -> proxy-trained state_dict of the current top students
    finals       (context, key) -> fully trained result and state_dict (a finalist by its architecture key;
                 the pruning baseline of ``final.prune`` by ``prune:<importance>:<parameters>``)
    kernels      (run, step) -> the kernels' state_dict of that step and the data their GPs were
                 conditioned on (``data``: features, rewards, subsets; NULL in older files): kernel
                 transfer reads them
    rng          (run, step) -> the search's random-number state before that step's proposals
    latency      (key, device, batch_size) -> measured latency (ms, the median of ``repeats`` timings):
                 shared by every run and context, so no architecture is timed twice on one device

Resume replays the search from its seed: evaluations come from the cache instantly, kernels are
retrained deterministically, and the first evaluation missing from the cache is where the killed
run stopped. The stored random-number states check that the replay follows the recorded run.
Tensors are stored as ``torch.save`` bytes and read back with ``weights_only=True``.

Bad stores are refused when opened, with ``StoreError`` naming the file and what to do: a file
that is not SQLite, a damaged one (``PRAGMA quick_check``), one this process cannot write (said so,
the store left untouched), and a run that another live process holds (``hold_run``, also done by
``open_run``, takes an exclusive ``flock`` on ``<store>.<run>.lock``, released by ``finish_run`` /
``close`` / exit, or by the kernel when the process dies, so a killed run still resumes; other runs
sharing the file are not blocked). A row whose stored value cannot be decoded raises ``StoreError`` naming the table,
the row and the ``sqlite3`` command that deletes it, except the recomputable ones: unreadable proxy
weights, finalist results and random-number states are logged as a warning and read as missing.
"""
from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import socket
import sqlite3
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import torch

log = logging.getLogger("nascomp")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL, created REAL, updated REAL);
CREATE TABLE IF NOT EXISTS evaluations (context TEXT, key TEXT, f REAL, accuracy REAL, num_params INTEGER,
    seconds REAL, error TEXT, arch TEXT, created REAL, flops INTEGER, latency_ms REAL, memory_mb REAL,
    PRIMARY KEY (context, key));
CREATE TABLE IF NOT EXISTS history (run TEXT, idx INTEGER, step INTEGER, kernel INTEGER, key TEXT, PRIMARY KEY (run, idx));
CREATE TABLE IF NOT EXISTS inflight (run TEXT, key TEXT, step INTEGER, started REAL, PRIMARY KEY (run, key));
CREATE TABLE IF NOT EXISTS failures (run TEXT, context TEXT, key TEXT, f REAL, accuracy REAL, num_params INTEGER,
    seconds REAL, error TEXT, arch TEXT, created REAL, flops INTEGER, latency_ms REAL, memory_mb REAL,
    PRIMARY KEY (run, context, key));
CREATE TABLE IF NOT EXISTS weights (context TEXT, key TEXT, f REAL, state BLOB, PRIMARY KEY (context, key));
CREATE TABLE IF NOT EXISTS finals (context TEXT, key TEXT, result TEXT, state BLOB, PRIMARY KEY (context, key));
CREATE TABLE IF NOT EXISTS kernels (run TEXT, step INTEGER, state BLOB, PRIMARY KEY (run, step));
CREATE TABLE IF NOT EXISTS rng (run TEXT, step INTEGER, state TEXT, PRIMARY KEY (run, step));
CREATE TABLE IF NOT EXISTS latency (key TEXT, device TEXT, batch_size INTEGER, ms REAL, repeats INTEGER, created REAL,
    PRIMARY KEY (key, device, batch_size));
"""
# columns added after the first store files were written: (table, column, SQL type), added when missing
ADDED_COLUMNS = (("evaluations", "flops", "INTEGER"), ("evaluations", "latency_ms", "REAL"), ("evaluations", "memory_mb", "REAL"),
                 ("kernels", "data", "BLOB"))
# = Evaluation's fields but ``transient``, which is told by the table a row is in (failures: true)
EVALUATION_COLUMNS = ("f", "accuracy", "num_params", "seconds", "error", "flops", "latency_ms", "memory_mb")


@functools.cache
def schema_columns() -> dict[str, tuple[str, ...]]:
    """Each table of ``SCHEMA`` and its columns, in order."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: tuple(r[1] for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        db.close()


def _quote(name: str) -> str:
    """An SQL identifier, quoted (a foreign file's table names are not ours)."""
    return '"' + name.replace('"', '""') + '"'


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
    """The store cannot be used as asked (another config in it, a damaged or unwritable file, a run
    held by another process, an unreadable row); the message says which file and what to do."""


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._held: set[str] = set()  # the runs this store holds (hold_run)
        self._refuse_unwritable()
        self.db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            problems = [r[0] for r in self.db.execute("PRAGMA quick_check(3)")]  # ~0.03 s per 50 MB
            if problems != ["ok"]:
                found = "; ".join(line.strip() for p in problems for line in p.splitlines() if line.strip("* "))
                self.db.close()
                raise StoreError(f"the run store {self.path} is damaged (SQLite's quick_check: {found}). "
                                 f"Nothing was changed. Salvage what is readable with `sqlite3 {self.path} .recover "
                                 f"| sqlite3 recovered.sqlite` and point store.path at recovered.sqlite, or move "
                                 f"{self.path.name} away to start afresh")
            self._refuse_foreign()  # before the first write: a file of another program is left byte for byte
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self._add_columns()
        except OSError as exc:
            raise StoreError(f"cannot create the run store {self.path}: {exc}; point store.path at a writable place") from exc
        except sqlite3.DatabaseError as exc:
            if self.db is not None:
                self.db.close()
            self._refuse_unwritable()  # e.g. the directory became read-only, or access() could not tell
            raise StoreError(f"{self.path} is not a usable SQLite run store ({exc}); move it away or point "
                             "store.path elsewhere") from exc

    def _refuse_unwritable(self) -> None:
        refuse_unwritable(self.path)

    def _refuse_foreign(self) -> None:
        """Refuse, before writing anything, an SQLite file that is not a run store: one holding tables
        but none of the store's, or one of the store's tables without the store's columns (a store
        written by an older version lacks only ``ADDED_COLUMNS``, which ``_add_columns`` adds)."""
        tables = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                 "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        if not tables:
            return
        expected = schema_columns()
        added = {(t, c) for t, c, _ in ADDED_COLUMNS}
        foreign = []
        for table in tables:
            if table in expected:
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({_quote(table)})")}
                missing = [c for c in expected[table] if c not in have and (table, c) not in added]
                if missing:
                    foreign.append(f"table {table!r} has columns ({', '.join(sorted(have))}), not the store's "
                                   f"({', '.join(expected[table])})")
        if not foreign and not set(tables) & set(expected):
            foreign.append(f"its tables ({', '.join(map(repr, tables))}) are none of the store's")
        if foreign:
            self.db.close()
            raise StoreError(f"{self.path} is an SQLite file but not a nascomp run store: {'; '.join(foreign)}. "
                             f"Nothing was changed; point store.path (or hydra.run.dir) at another file")

    def _add_columns(self) -> None:
        """Bring a store written by an older version up to ``SCHEMA`` (``ADDED_COLUMNS``); its rows keep
        their values, the new columns are NULL in them."""
        for table, column, kind in ADDED_COLUMNS:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                with self._tx():
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        for run in list(self._held):
            self.release(run)
        self.db.close()

    def _tx(self):
        return _Transaction(self.db)

    @contextmanager
    def _guard(self, table: str, row: str):
        """SQLite errors inside become ``StoreError`` naming the store, table and row."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "malformed" in text or "not a database" in text or "corrupt" in text:
                advice = (f"the file is damaged: `sqlite3 {self.path} 'PRAGMA integrity_check'` shows where; salvage "
                          f"with `sqlite3 {self.path} .recover | sqlite3 recovered.sqlite` and point store.path there")
            elif "locked" in text or "busy" in text:
                advice = "another process kept the store locked for over 30 s; retry when it is done"
            elif "readonly" in text or "read-only" in text:
                advice = "the store or its directory is not writable by this process; make it writable"
            else:
                advice = "check the disk (space, I/O errors); what is already stored stays as it was"
            raise StoreError(f"the run store {self.path}, table {table} ({row}): {type(exc).__name__}: {text}; "
                             f"{advice}") from exc

    def _decode(self, table: str, row: str, where: str, decode, value, missing_ok: str = ""):
        """``decode(value)``; a value that cannot be decoded raises ``StoreError`` saying how to delete the
        row, or, with ``missing_ok`` (what happens instead), is logged as a warning and read as None."""
        try:
            return decode(value)
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            delete = f"sqlite3 {self.path} \"DELETE FROM {table} WHERE {where}\""
            if missing_ok:
                log.warning("the %s row (%s) of the run store %s cannot be read (%s); read as missing: %s. "
                            "To remove it: %s", table, row, self.path, error, missing_ok, delete)
                return None
            raise StoreError(f"the {table} row ({row}) of the run store {self.path} cannot be read ({error}). Delete that "
                             f"row with: {delete}; or point store.path elsewhere; {self._intact()}") from exc

    def _intact(self) -> str:
        try:
            n = self.db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        except sqlite3.DatabaseError:
            return "the other rows are not affected"
        return f"the other rows, and the {n} evaluations, are not affected"

    # ----------------------------------------------------------------- run locks
    def lock_path(self, run: str) -> Path:
        return lock_path(self.path, run)

    def hold(self, run: str) -> None:
        """``hold_run`` for this store; ``release``, ``finish_run`` and ``close`` release it."""
        hold_run(self.path, run)
        self._held.add(run)

    def release(self, run: str) -> None:
        release_run(self.path, run)
        self._held.discard(run)

    # ----------------------------------------------------------------- runs
    def open_run(self, run: str, config: dict, resume: bool = True, ignore: tuple[str, ...] = ()) -> bool:
        """Register ``run`` with ``config``; returns True when it resumes an existing run. A run id
        already stored with another config (its top-level keys in ``ignore`` aside: what does not change
        the run's results, e.g. where the store is), or any existing run when ``resume`` is false, is an
        error, and so is a run another live process holds (this process then holds it until
        ``finish_run`` or ``close``). The config first stored is kept."""
        self.hold(run)
        row_name = f"run {run!r}"
        with self._guard("runs", row_name):
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
                stored = self._decode("runs", row_name, f"run = '{run}'", json.loads, row[0])
                diff = config_diff(stored, config, ignore)
                if diff:
                    raise StoreError(f"{self.path} holds run {run!r} with a different config ({'; '.join(diff[:5])}); "
                                     "run with the same config to resume it, or choose another name / run directory")
            with self._tx():
                self.db.execute("UPDATE runs SET status = 'running', updated = ? WHERE run = ?", (time.time(), run))
        return True

    def latest_run(self, exclude: str) -> tuple[str, dict, str] | None:
        """The run other than ``exclude`` registered last in this store: (run id, its config, its status);
        None when there is none, or its config cannot be read."""
        with self._guard("runs", f"the latest run other than {exclude!r}"):
            row = self.db.execute("SELECT run, config, status FROM runs WHERE run != ? ORDER BY created DESC, rowid DESC "
                                  "LIMIT 1", (exclude,)).fetchone()
        if row is None:
            return None
        config = self._decode("runs", f"run {row[0]!r}", f"run = '{row[0]}'", json.loads, row[1], missing_ok="not compared")
        return None if config is None else (row[0], config, row[2])

    def finish_run(self, run: str, status: str = "finished") -> None:
        with self._guard("runs", f"run {run!r}"), self._tx():
            self.db.execute("UPDATE runs SET status = ?, updated = ? WHERE run = ?", (status, time.time(), run))
        if run in self._held:
            self.release(run)

    def status(self, run: str) -> str | None:
        with self._guard("runs", f"run {run!r}"):
            row = self.db.execute("SELECT status FROM runs WHERE run = ?", (run,)).fetchone()
        return row[0] if row else None

    # ----------------------------------------------------------------- evaluations (the cache)
    def cached(self, context: str, keys: Iterable[str], run: str | None = None) -> dict[str, dict]:
        """key -> stored result (``EVALUATION_COLUMNS``) of those ``keys`` evaluated in ``context``. With
        ``run``, that run's own transient failures (table ``failures``, ``"transient": True``) come first,
        so its replay meets them whatever another run sharing the store recorded for the key since."""
        out = {}
        for k in keys:
            if run is not None:
                with self._guard("failures", f"run {run!r}, context {context!r}, key {k!r}"):
                    row = self.db.execute(f"SELECT {', '.join(EVALUATION_COLUMNS)} FROM failures WHERE run = ? AND "
                                          "context = ? AND key = ?", (run, context, k)).fetchone()
                if row:
                    out[k] = {**dict(zip(EVALUATION_COLUMNS, row)), "transient": True}
                    continue
            with self._guard("evaluations", f"context {context!r}, key {k!r}"):
                row = self.db.execute(f"SELECT {', '.join(EVALUATION_COLUMNS)} FROM evaluations WHERE context = ? AND key = ?",
                                      (context, k)).fetchone()
            if row:
                out[k] = dict(zip(EVALUATION_COLUMNS, row))
        return out

    def arch(self, context: str, key: str) -> dict | None:
        """The description of an evaluated architecture (``Candidate.to_dict``), or None when not evaluated."""
        with self._guard("evaluations", f"context {context!r}, key {key!r}"):
            row = self.db.execute("SELECT arch FROM evaluations WHERE context = ? AND key = ?", (context, key)).fetchone()
        return None if row is None else self._decode("evaluations", f"key {key!r}", f"context = '{context}' AND key = '{key}'",
                                                     json.loads, row[0])

    def start(self, run: str, keys: Iterable[str], step: int) -> None:
        with self._guard("inflight", f"run {run!r}, step {step}"), self._tx():
            self.db.executemany("INSERT OR REPLACE INTO inflight VALUES (?, ?, ?, ?)", [(run, k, step, time.time()) for k in keys])

    def inflight(self, run: str) -> list[str]:
        with self._guard("inflight", f"run {run!r}"):
            return [r[0] for r in self.db.execute("SELECT key FROM inflight WHERE run = ? ORDER BY started", (run,))]

    def record(self, run: str, context: str, results: list[tuple[str, dict, dict]]) -> None:
        """Store finished evaluations (key, result, arch description) and clear them from inflight: in the
        shared cache (``evaluations``), or, a transient failure (``result["transient"]``), in this run's
        ``failures``."""
        columns = ", ".join(EVALUATION_COLUMNS)
        values = ", ?" * len(EVALUATION_COLUMNS)
        with self._guard("evaluations", f"run {run!r}, context {context!r}, {len(results)} results"), self._tx():
            for key, r, arch in results:
                row = (context, key, json.dumps(arch), time.time(), *(r.get(c) for c in EVALUATION_COLUMNS))
                if r.get("transient"):
                    self.db.execute(f"INSERT OR REPLACE INTO failures (run, context, key, arch, created, {columns}) "
                                    f"VALUES (?, ?, ?, ?, ?{values})", (run, *row))
                else:
                    self.db.execute(f"INSERT OR REPLACE INTO evaluations (context, key, arch, created, {columns}) "
                                    f"VALUES (?, ?, ?, ?{values})", row)
                self.db.execute("DELETE FROM inflight WHERE run = ? AND key = ?", (run, key))

    def count(self, context: str, run: str | None = None) -> int:
        """How many architectures have a stored evaluation in ``context``: the shared ones, and with ``run``
        also that run's own transient failures (``failures``), each key once, as :meth:`cached` reads them."""
        with self._guard("evaluations", f"context {context!r}"):  # run None: ``run = NULL`` matches no failure
            return self.db.execute("SELECT COUNT(*) FROM (SELECT key FROM evaluations WHERE context = ? UNION "
                                   "SELECT key FROM failures WHERE context = ? AND run = ?)",
                                   (context, context, run)).fetchone()[0]

    # ----------------------------------------------------------------- history
    def append_history(self, run: str, rows: list[tuple[int, int, int | None, str]]) -> None:
        """(index, step, proposer, key) rows; re-recording the same index (a replay) is a no-op."""
        with self._guard("history", f"run {run!r}"), self._tx():
            self.db.executemany("INSERT OR IGNORE INTO history VALUES (?, ?, ?, ?, ?)", [(run, *r) for r in rows])

    def history(self, run: str) -> list[tuple[int, int, int | None, str]]:
        with self._guard("history", f"run {run!r}"):
            return [tuple(r) for r in self.db.execute("SELECT idx, step, kernel, key FROM history WHERE run = ? ORDER BY idx", (run,))]

    # ----------------------------------------------------------------- random-number states, kernels
    def rng_state(self, run: str, step: int) -> dict | None:
        """The recorded state of ``step``; an unreadable one is reported and read as missing (the check
        of that step is skipped and the replay's state recorded in its place)."""
        row_name = f"run {run!r}, step {step}"
        with self._guard("rng", row_name):
            row = self.db.execute("SELECT state FROM rng WHERE run = ? AND step = ?", (run, step)).fetchone()
        if row is None:
            return None
        return self._decode("rng", row_name, f"run = '{run}' AND step = {step}", json.loads, row[0],
                            missing_ok="that step's replay is not checked and its state is recorded again")

    def save_rng_state(self, run: str, step: int, state: dict) -> None:
        with self._guard("rng", f"run {run!r}, step {step}"), self._tx():
            self.db.execute("INSERT OR REPLACE INTO rng VALUES (?, ?, ?)", (run, step, json.dumps(state)))

    def save_kernels(self, run: str, step: int, state: dict, data: dict | None = None) -> None:
        """The kernels of ``step`` (their state_dict) and ``data``, what their GPs were conditioned on
        (``nascomp.transfer.SourceKernels.data``)."""
        with self._guard("kernels", f"run {run!r}, step {step}"), self._tx():
            self.db.execute("INSERT OR REPLACE INTO kernels (run, step, state, data) VALUES (?, ?, ?, ?)",
                            (run, step, to_bytes(state), None if data is None else to_bytes(data)))

    def kernels(self, run: str, step: int | None = None) -> tuple[int, dict] | None:
        """The kernels of ``step`` (default: the last step that has them)."""
        q = "SELECT step, state FROM kernels WHERE run = ? " + ("AND step = ?" if step is not None else "ORDER BY step DESC LIMIT 1")
        with self._guard("kernels", f"run {run!r}, step {step if step is not None else 'last'}"):
            row = self.db.execute(q, (run, step) if step is not None else (run,)).fetchone()
        if row is None:
            return None
        return row[0], self._decode("kernels", f"run {run!r}, step {row[0]}", f"run = '{run}' AND step = {row[0]}",
                                    from_bytes, row[1])

    def kernel_data(self, run: str, step: int) -> dict | None:
        """The data the kernels of ``step`` were conditioned on (None: not stored, e.g. an older store)."""
        with self._guard("kernels", f"run {run!r}, step {step}"):
            row = self.db.execute("SELECT data FROM kernels WHERE run = ? AND step = ?", (run, step)).fetchone()
        if row is None or row[0] is None:
            return None
        return self._decode("kernels", f"run {run!r}, step {step}", f"run = '{run}' AND step = {step}", from_bytes, row[0])

    def latest_kernels(self) -> tuple[str, int, dict] | None:
        """(run, step, state) of the most recent run that stored kernels, preferring finished runs."""
        with self._guard("kernels", "the latest run's last step"):
            row = self.db.execute("SELECT k.run, MAX(k.step) FROM kernels k JOIN runs r ON r.run = k.run GROUP BY k.run "
                                  "ORDER BY r.status = 'finished' DESC, r.updated DESC LIMIT 1").fetchone()
        if row is None or row[0] is None:
            return None
        step, state = self.kernels(row[0], row[1])
        return row[0], step, state

    def runs(self) -> list[tuple[str, str]]:
        with self._guard("runs", "all runs"):
            return [tuple(r) for r in self.db.execute("SELECT run, status FROM runs ORDER BY created")]

    # ----------------------------------------------------------------- latency (nascomp.cost.Meter)
    def latency(self, key: str, device: str, batch_size: int) -> float | None:
        """The measured latency (ms) of architecture ``key`` on ``device`` at ``batch_size``, or None."""
        with self._guard("latency", f"key {key!r}, device {device!r}, batch size {batch_size}"):
            row = self.db.execute("SELECT ms FROM latency WHERE key = ? AND device = ? AND batch_size = ?",
                                  (key, device, batch_size)).fetchone()
        return None if row is None else row[0]

    def save_latency(self, key: str, device: str, batch_size: int, ms: float, repeats: int) -> None:
        with self._guard("latency", f"key {key!r}, device {device!r}, batch size {batch_size}"), self._tx():
            self.db.execute("INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?, ?)",
                            (key, device, batch_size, ms, repeats, time.time()))

    # ----------------------------------------------------------------- weights
    def save_weights(self, context: str, key: str, f: float, state: dict, keep: int) -> None:
        """Keep the proxy weights of the ``keep`` best students of this context."""
        with self._guard("weights", f"context {context!r}, key {key!r}"), self._tx():
            self.db.execute("INSERT OR REPLACE INTO weights VALUES (?, ?, ?, ?)", (context, key, f, to_bytes(state)))
            self.db.execute("DELETE FROM weights WHERE context = ? AND key NOT IN (SELECT key FROM weights WHERE "
                            "context = ? ORDER BY f DESC LIMIT ?)", (context, context, keep))

    def weights(self, context: str, key: str) -> dict | None:
        """The proxy-trained weights of ``key``; unreadable ones are reported and read as missing (a
        finalist's are then proxy-trained again: ``pipeline.Setup.proxy_weights``)."""
        row_name = f"context {context!r}, key {key!r}"
        with self._guard("weights", row_name):
            row = self.db.execute("SELECT state FROM weights WHERE context = ? AND key = ?", (context, key)).fetchone()
        if row is None:
            return None
        return self._decode("weights", row_name, f"context = '{context}' AND key = '{key}'", from_bytes, row[0],
                            missing_ok="a finalist's proxy training is run again")

    def save_final(self, context: str, key: str, result: dict, state: dict) -> None:
        with self._guard("finals", f"context {context!r}, key {key!r}"), self._tx():
            self.db.execute("INSERT OR REPLACE INTO finals VALUES (?, ?, ?, ?)", (context, key, json.dumps(result), to_bytes(state)))

    def final(self, context: str, key: str) -> tuple[dict, dict] | None:
        """The stored full-training result and weights of ``key``; unreadable ones are reported and read as
        missing (the finalist is trained again and its row overwritten)."""
        row_name = f"context {context!r}, key {key!r}"
        with self._guard("finals", row_name):
            row = self.db.execute("SELECT result, state FROM finals WHERE context = ? AND key = ?", (context, key)).fetchone()
        if row is None:
            return None
        return self._decode("finals", row_name, f"context = '{context}' AND key = '{key}'",
                            lambda r: (json.loads(r[0]), from_bytes(r[1])), row,
                            missing_ok="this finalist is trained again and its row overwritten")


def refuse_unwritable(path: Path) -> None:
    """Raise ``StoreError`` when this process cannot write the store at ``path``: SQLite in WAL mode
    writes the file and creates ``<store>-wal`` / ``-shm`` beside it, ``hold_run`` a lock file there."""
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if folder is None:
        return
    if not folder.is_dir():
        reason = f"{folder} is not a directory"
    elif not os.access(folder, os.W_OK | os.X_OK):
        reason = f"the directory {folder} is not writable by this process (user {_user()})"
    elif path.exists() and not os.access(path, os.R_OK | os.W_OK):
        reason = f"the file {path} is not writable by this process (user {_user()})"
    else:
        return
    kept = " The store was not opened: nothing in it is lost or changed." if path.is_file() else ""
    raise StoreError(f"cannot write the run store {path}: {reason}.{kept} Make it writable (chmod/chown), or "
                     "copy the run directory somewhere writable and run the same command with hydra.run.dir=<the "
                     "copy> (or store.path=<the copied store>)")


# --------------------------------------------------------------------------- one process per run
_HELD: dict[Path, int] = {}  # lock file -> the descriptor holding its flock, for the runs this process holds


def lock_path(store: str | Path, run: str) -> Path:
    """The lock file of ``run``: beside the store, one per run, so runs sharing a store do not block each other."""
    store = Path(store).absolute()
    return store.with_name(f"{store.name}.{run}.lock")


def hold_run(store: str | Path, run: str) -> None:
    """Hold ``run`` of the store at ``store`` for this process: an exclusive ``flock`` on ``lock_path``,
    whose text records pid, host, start time and command. ``StoreError`` naming the holder if another
    live process has it; a no-op if this process does. The kernel drops the lock when its holder dies,
    whatever killed it, so a killed run resumes. Needs no open store: a run can be held before any work."""
    path = lock_path(store, run)
    if path in _HELD:
        return
    refuse_unwritable(Path(store))
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip().replace("\n", ", ")
            os.close(fd)
            raise StoreError(f"run {run} of the store {store} is already running: held by "
                             f"{holder or 'a process that is just starting'} (lock file {path}). Wait for it to "
                             "finish, or stop it and run again to resume; a process that died holds nothing") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder unlinked between our open and our flock
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {started}\n"
                  f"command {' '.join(sys.argv)}\n".encode(), 0)
    _HELD[path] = fd


def release_run(store: str | Path, run: str) -> None:
    """Release a run this process holds (its lock file is removed)."""
    _drop(lock_path(store, run))


@atexit.register
def _release_all() -> None:
    """At exit (a finished run, or exit 2 at startup): no lock file is left behind."""
    for path in list(_HELD):
        _drop(path)


def _drop(path: Path) -> None:
    fd = _HELD.pop(path, None)
    if fd is None:
        return
    try:
        path.unlink()  # while still holding the lock: an opener that raced us sees the inode change and retries
    except FileNotFoundError:
        pass
    os.close(fd)


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def config_diff(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``'key.path: old -> new'`` for every leaf where two configs differ, their top-level keys in ``ignore`` aside."""
    return _diff({k: v for k, v in old.items() if k not in ignore}, {k: v for k, v in new.items() if k not in ignore})


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
