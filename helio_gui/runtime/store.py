"""Results, shifts and reject images in SQLite, durable before anything is reported.

Journal choice: WAL with ``synchronous=FULL``. Every `add()` is one transaction that is fsynced
to the WAL before it returns, and the runtime only reports a result (events, API) after `add()`
returned, so a result a client saw survives ``kill -9`` and power loss. WAL keeps readers (the
API) from blocking the writer (the inspection loop); NORMAL would be faster but can lose the
last commits on power loss, which the issue forbids.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shifts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    started_at REAL NOT NULL,
    counted_since REAL NOT NULL,
    ended_at REAL,
    total INTEGER NOT NULL DEFAULT 0,
    pass INTEGER NOT NULL DEFAULT 0,
    fail INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS shift_defects (
    shift_id INTEGER NOT NULL,
    defect TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (shift_id, defect)
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    frame_id INTEGER NOT NULL,
    frame_ts REAL NOT NULL,
    verdict TEXT NOT NULL,
    defects TEXT NOT NULL,
    measurements TEXT NOT NULL,
    recipe_name TEXT NOT NULL,
    recipe_version TEXT NOT NULL,
    frame_w INTEGER NOT NULL,
    frame_h INTEGER NOT NULL,
    regions TEXT NOT NULL,
    shift_id INTEGER,
    source_name TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS results_ts ON results(ts);
CREATE INDEX IF NOT EXISTS results_verdict ON results(verdict, id);
CREATE TABLE IF NOT EXISTS images (
    result_id INTEGER PRIMARY KEY,
    jpeg BLOB NOT NULL,
    size INTEGER NOT NULL
);
"""


class StoreError(RuntimeError):
    """The results database cannot be opened or written; the message says what to do."""


@dataclass(frozen=True)
class Retention:
    """How many reject images to keep: the oldest go first when either limit is passed."""

    max_images: int = 2000
    max_bytes: int = 500 * 1024 * 1024


class ResultStore:
    """SQLite results store in `data_dir` (WAL, synchronous=FULL); safe to call from any thread."""

    def __init__(self, data_dir: str | Path, retention: Retention | None = None):
        self.data_dir = Path(data_dir)
        self.retention = retention or Retention()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.path = self.data_dir / "results.sqlite3"
            # One connection behind a lock: writes are small and few per second, and a single
            # connection makes "committed before reported" trivially true across threads.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the results database in {self.data_dir}: {exc}. "
                             "Check the data directory exists, is writable and is not full.") from exc
        self._lock = threading.Lock()
        self._closed = False
        self._image_bytes = self._scalar("SELECT COALESCE(SUM(size), 0) FROM images")
        self._image_count = self._scalar("SELECT COUNT(*) FROM images")
        if self.current_shift() is None:
            self.start_shift("shift 1")

    # -- plumbing ------------------------------------------------------------------------------
    def _scalar(self, sql: str, args: Iterable[Any] = ()) -> Any:
        row = self._db.execute(sql, tuple(args)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        """Checkpoints the WAL and closes the database (everything was already committed)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()

    def pragma(self, name: str) -> Any:
        with self._lock:
            return self._scalar(f"PRAGMA {name}")

    # -- results -------------------------------------------------------------------------------
    def add(self, inspection: Any, *, jpeg: bytes | None = None, ts: float | None = None,
            source_name: str = "") -> dict:
        """Stores one inspected part durably (fsynced) and returns its result JSON.

        `inspection` is a `helio_gui.vision.types.Inspection`; `jpeg` is the overlay image kept
        for rejects (subject to retention).
        """
        ts = time.time() if ts is None else ts
        defects = list(inspection.defects)
        measurements = _jsonable(inspection.measurements)
        regions = [r.to_json() for r in inspection.regions]
        verdict = inspection.verdict
        w, h = inspection.frame_size
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                shift_id = self._scalar("SELECT id FROM shifts WHERE ended_at IS NULL ORDER BY id DESC LIMIT 1")
                cur = self._db.execute(
                    "INSERT INTO results (ts, frame_id, frame_ts, verdict, defects, measurements, "
                    "recipe_name, recipe_version, frame_w, frame_h, regions, shift_id, source_name) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (ts, inspection.frame_id, inspection.frame_ts, verdict, json.dumps(defects),
                     json.dumps(measurements), inspection.recipe_name, str(inspection.recipe_version),
                     int(w), int(h), json.dumps(regions), shift_id, source_name))
                rid = cur.lastrowid
                passed = 1 if verdict == "PASS" else 0
                self._db.execute("UPDATE shifts SET total = total + 1, pass = pass + ?, fail = fail + ? "
                                 "WHERE id = ?", (passed, 1 - passed, shift_id))
                for d in defects:
                    self._db.execute("INSERT INTO shift_defects (shift_id, defect, n) VALUES (?, ?, 1) "
                                     "ON CONFLICT(shift_id, defect) DO UPDATE SET n = n + 1", (shift_id, d))
                if jpeg is not None:
                    self._db.execute("INSERT INTO images (result_id, jpeg, size) VALUES (?,?,?)",
                                     (rid, jpeg, len(jpeg)))
                    self._image_bytes += len(jpeg)
                    self._image_count += 1
                    self._enforce_retention()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"could not store a result in {self.path}: {exc}") from exc
            row = self._db.execute("SELECT * FROM results WHERE id = ?", (rid,)).fetchone()
            has_image = jpeg is not None and self._has_image(rid)
        return _row_to_json(row, self._columns(), has_image)

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._image_bytes = self._scalar("SELECT COALESCE(SUM(size), 0) FROM images")
        self._image_count = self._scalar("SELECT COUNT(*) FROM images")

    def _enforce_retention(self) -> None:
        r = self.retention
        while self._image_count > r.max_images or (self._image_bytes > r.max_bytes and self._image_count > 0):
            oldest = self._db.execute("SELECT result_id, size FROM images ORDER BY result_id LIMIT 1").fetchone()
            if oldest is None:
                break
            self._db.execute("DELETE FROM images WHERE result_id = ?", (oldest[0],))
            self._image_count -= 1
            self._image_bytes -= oldest[1]

    def _has_image(self, rid: int) -> bool:
        return self._db.execute("SELECT 1 FROM images WHERE result_id = ?", (rid,)).fetchone() is not None

    def _columns(self) -> list[str]:
        return [c[1] for c in self._db.execute("PRAGMA table_info(results)").fetchall()]

    def image(self, result_id: int) -> bytes | None:
        """The JPEG kept for a result, or None when none was kept (pass, or retention)."""
        with self._lock:
            row = self._db.execute("SELECT jpeg FROM images WHERE result_id = ?", (result_id,)).fetchone()
        return bytes(row[0]) if row else None

    def image_stats(self) -> dict:
        with self._lock:
            return {"count": self._image_count, "bytes": self._image_bytes}

    def get(self, result_id: int) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone()
            if row is None:
                return None
            return _row_to_json(row, self._columns(), self._has_image(result_id))

    def results(self, *, limit: int = 50, before_id: int | None = None, after_id: int | None = None,
                verdict: str | None = None, since: float | None = None, until: float | None = None,
                oldest_first: bool = False) -> list[dict]:
        """Results matching the filters, newest first (or oldest first for replay)."""
        where, args = [], []
        if before_id is not None:
            where.append("r.id < ?"); args.append(before_id)
        if after_id is not None:
            where.append("r.id > ?"); args.append(after_id)
        if verdict is not None:
            where.append("r.verdict = ?"); args.append(verdict)
        if since is not None:
            where.append("r.ts >= ?"); args.append(since)
        if until is not None:
            where.append("r.ts < ?"); args.append(until)
        sql = ("SELECT r.*, i.result_id IS NOT NULL AS has_image FROM results r "
               "LEFT JOIN images i ON i.result_id = r.id")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY r.id {'ASC' if oldest_first else 'DESC'} LIMIT ?"
        args.append(int(limit))
        with self._lock:
            cur = self._db.execute(sql, args)
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [_row_to_json(row[:-1], cols[:-1], bool(row[-1])) for row in rows]

    def all_ids(self) -> set[int]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM results")}

    def count(self) -> int:
        with self._lock:
            return int(self._scalar("SELECT COUNT(*) FROM results"))

    def last_id(self) -> int:
        with self._lock:
            return int(self._scalar("SELECT COALESCE(MAX(id), 0) FROM results"))

    def csv(self, *, since: float | None = None, until: float | None = None) -> str:
        """CSV of the results in a time range (unix seconds), oldest first."""
        return "".join(self.csv_chunks(since=since, until=until))

    def csv_chunks(self, *, since: float | None = None, until: float | None = None,
                   batch: int = 250) -> Iterator[str]:
        """The same CSV in pieces of `batch` rows. The lock is held per piece, never for the
        whole export: one query over 20 000 results held it 10 s (the line could not store a
        part) and took 800 MB."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "time_utc", "ts", "frame_id", "verdict", "defects", "recipe_name",
                         "recipe_version", "shift_id", "source_name", "measurements"])
        yield out.getvalue()
        where, args = ["id > ?"], [0]
        if since is not None:
            where.append("ts >= ?"); args.append(since)
        if until is not None:
            where.append("ts < ?"); args.append(until)
        sql = ("SELECT id, ts, frame_id, verdict, defects, recipe_name, recipe_version, shift_id, "
               "source_name, measurements FROM results WHERE " + " AND ".join(where) + " ORDER BY id LIMIT ?")
        while True:
            with self._lock:
                rows = self._db.execute(sql, (*args, batch)).fetchall()
            if not rows:
                return
            out = io.StringIO()
            writer = csv.writer(out)
            for rid, ts, fid, verdict, defects, rname, rver, sid, sname, meas in rows:
                writer.writerow([rid, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z",
                                 f"{ts:.3f}", fid, verdict, ";".join(json.loads(defects)), rname, rver, sid,
                                 sname, meas])
            yield out.getvalue()
            args[0] = rows[-1][0]

    # -- shifts and stats ----------------------------------------------------------------------
    def current_shift(self) -> dict | None:
        with self._lock:
            return self._current_shift()

    def _current_shift(self) -> dict | None:
        row = self._db.execute("SELECT id, name, started_at, counted_since, total, pass, fail FROM shifts "
                               "WHERE ended_at IS NULL ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        sid, name, started, since, total, passed, failed = row
        return {"id": sid, "name": name, "started_at": started, "counted_since": since, "total": total,
                "pass": passed, "fail": failed, "yield": (passed / total) if total else None}

    def start_shift(self, name: str | None = None) -> dict:
        """Ends the current shift and starts a new one (counters from zero)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._scalar("SELECT COUNT(*) FROM shifts")
                self._db.execute("UPDATE shifts SET ended_at = ? WHERE ended_at IS NULL", (now,))
                self._db.execute("INSERT INTO shifts (name, started_at, counted_since) VALUES (?,?,?)",
                                 (name or f"shift {n + 1}", now, now))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"could not start a shift: {exc}") from exc
            return self._current_shift()

    def reset_shift(self, name: str | None = None) -> dict:
        """Zeroes the current shift's counters (results stay stored); optionally renames it."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._current_shift()
                self._db.execute("UPDATE shifts SET total = 0, pass = 0, fail = 0, counted_since = ?, "
                                 "name = COALESCE(?, name) WHERE id = ?", (now, name, cur["id"]))
                self._db.execute("DELETE FROM shift_defects WHERE shift_id = ?", (cur["id"],))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"could not reset the shift: {exc}") from exc
            return self._current_shift()

    def stats(self, *, bucket_s: float = 60.0, buckets: int = 60, now: float | None = None) -> dict:
        """Totals of the current shift, parts/min over the last minute, defects by type and
        time buckets (oldest first, empty buckets included)."""
        now = time.time() if now is None else now
        bucket_s = max(1.0, float(bucket_s))
        buckets = max(1, min(int(buckets), 1440))
        with self._lock:
            shift = self._current_shift()
            defects = dict(self._db.execute("SELECT defect, n FROM shift_defects WHERE shift_id = ? "
                                            "ORDER BY n DESC", (shift["id"],)).fetchall())
            first = (int(now // bucket_s) - buckets + 1) * bucket_s
            rows = self._db.execute(
                "SELECT CAST((ts - ?) / ? AS INTEGER) AS b, COUNT(*), SUM(verdict = 'PASS') FROM results "
                "WHERE ts >= ? GROUP BY b", (first, bucket_s, first)).fetchall()
            window = min(60.0, max(1.0, now - shift["counted_since"]))
            recent = self._scalar("SELECT COUNT(*) FROM results WHERE ts >= ? AND shift_id = ? AND ts >= ?",
                                  (now - window, shift["id"], shift["counted_since"]))
        by_bucket = {int(b): (int(t), int(p or 0)) for b, t, p in rows}
        out_buckets = []
        for i in range(buckets):
            t, p = by_bucket.get(i, (0, 0))
            out_buckets.append({"t": first + i * bucket_s, "total": t, "pass": p, "fail": t - p})
        total, passed, failed = shift["total"], shift["pass"], shift["fail"]
        shift_json = {k: shift[k] for k in ("id", "name", "started_at", "total", "pass", "fail", "yield")}
        shift_json["counted_since"] = shift["counted_since"]
        return {"total": total, "pass": passed, "fail": failed,
                "yield": (passed / total) if total else None,
                "parts_per_min": round(recent * 60.0 / window, 2),
                "defects": defects, "buckets": out_buckets, "bucket_s": bucket_s, "shift": shift_json}


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if hasattr(v, "item"):  # numpy scalars
            v = v.item()
        if isinstance(v, float) and v != v:  # NaN is not JSON
            v = None
        out[str(k)] = v
    return out


def _row_to_json(row: tuple, cols: list[str], has_image: bool) -> dict:
    r = dict(zip(cols, row))
    rid = r["id"]
    return {"id": rid, "ts": r["ts"], "frame_id": r["frame_id"], "frame_ts": r["frame_ts"],
            "verdict": r["verdict"], "defects": json.loads(r["defects"]),
            "measurements": json.loads(r["measurements"]), "recipe_name": r["recipe_name"],
            "recipe_version": r["recipe_version"], "frame_size": [r["frame_w"], r["frame_h"]],
            "image_url": f"/api/results/{rid}/image" if has_image else None,
            "regions": json.loads(r["regions"]), "shift_id": r["shift_id"],
            "source_name": r["source_name"]}
