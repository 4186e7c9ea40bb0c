"""The run registry: one SQLite file holding every run, its metrics by stage and its artefacts.

The journal is WAL, so readers (`concept-encoder runs list`) never block the experiment writing beside them,
and every write is one `BEGIN IMMEDIATE` transaction: two experiments writing at once wait for each other
instead of losing rows, and a crash mid-write leaves the run as it was before the call.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from ..rundir import DEFAULT_OUTPUT_ROOT

REGISTRY_ENV_VAR = "CONCEPT_ENCODER_REGISTRY"
REGISTRY_FILE = "registry.sqlite"
SCHEMA_VERSION = 1  # stored as PRAGMA user_version; bump with a migration when the tables change
BUSY_TIMEOUT_S = 30.0
STATUSES = ("running", "complete", "failed")
# What `runs list` shows per run, as `stage.key` (the names the gates use).
HEADLINE_METRICS = ("pretrain.eval_loss", "analysis.effective_rank_per_sample", "finetune.stsb.spearman")

_TABLES = {
    "runs": """CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        created     TEXT NOT NULL,  -- ISO 8601 UTC, so text order is time order
        updated     TEXT NOT NULL,
        status      TEXT NOT NULL,
        run_dir     TEXT NOT NULL,
        git_commit  TEXT,
        config_json TEXT NOT NULL,
        notes       TEXT
    )""",
    "metrics": """CREATE TABLE metrics (
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        stage  TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  REAL,  -- NULL: not finite (a diverged loss is still worth recording)
        std    REAL,
        PRIMARY KEY (run_id, stage, key)
    )""",
    "artefacts": """CREATE TABLE artefacts (
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        name   TEXT NOT NULL,
        path   TEXT NOT NULL,
        PRIMARY KEY (run_id, name)
    )""",
}

_UPSERT_RUN = """
INSERT INTO runs (run_id, created, updated, status, run_dir, git_commit, config_json, notes)
VALUES (:run_id, :created, :updated, :status, :run_dir, :git_commit, :config_json, :notes)
ON CONFLICT (run_id) DO UPDATE SET
    created = CASE WHEN :keep_created THEN runs.created ELSE excluded.created END,
    updated = excluded.updated,
    status = excluded.status,
    run_dir = excluded.run_dir,
    git_commit = COALESCE(excluded.git_commit, runs.git_commit),
    config_json = excluded.config_json,
    notes = COALESCE(excluded.notes, runs.notes)
"""
_UPSERT_METRIC = """
INSERT INTO metrics (run_id, stage, key, value, std) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (run_id, stage, key) DO UPDATE SET value = excluded.value, std = excluded.std
"""
_UPSERT_ARTEFACT = """
INSERT INTO artefacts (run_id, name, path) VALUES (?, ?, ?)
ON CONFLICT (run_id, name) DO UPDATE SET path = excluded.path
"""
_NEWEST_FIRST = "ORDER BY created DESC, rowid DESC"  # rowid breaks ties between runs recorded in the same second


from ..errors import RegistryError


def default_registry_path(output_root: str | Path = DEFAULT_OUTPUT_ROOT) -> Path:
    """$CONCEPT_ENCODER_REGISTRY if set, else `{output_root}/registry.sqlite`."""
    override = os.environ.get(REGISTRY_ENV_VAR)
    return Path(override).expanduser() if override else Path(output_root) / REGISTRY_FILE


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD of the repository holding `path` (default: this package), "-dirty" if it has changes; None without git."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    head = _git(folder, "rev-parse", "HEAD")
    if not head:
        return None
    changes = _git(folder, "--no-optional-locks", "status", "--porcelain")  # no index.lock: never races a user's git
    return f"{head}-dirty" if changes else head


def _git(folder: Path, *args: str) -> str | None:
    try:
        command = ["git", "-C", str(folder), *args]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # git missing, folder gone, or a hung filesystem
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _timestamp(when: str | datetime) -> str:
    if isinstance(when, datetime):
        when = when if when.tzinfo else when.astimezone()  # naive means local time
        return when.astimezone(UTC).isoformat(timespec="seconds")
    return str(when)


def _finite(number: Any) -> float | None:
    """A real number as float, None if it is nan/inf; anything else (strings, bools, tensors) is refused."""
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise TypeError(f"{number!r} is not a number")
    number = float(number)
    return number if math.isfinite(number) else None


def _value_std(given: Any) -> tuple[float | None, float | None]:
    """A metric as given (number, (value, std), or {"mean"/"value": .., "std": ..}) -> (value, std)."""
    if isinstance(given, Mapping):
        value, std = given.get("mean", given.get("value")), given.get("std")
    elif isinstance(given, (tuple, list)) and len(given) == 2:
        value, std = given
    else:
        value, std = given, None
    return _finite(value), None if std is None else _finite(std)


class Registry:
    """One registry database, one connection; use as a context manager or call `close()`."""

    def __init__(self, path: str | Path, *, timeout: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        self.timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RegistryError(f"{self.path}: cannot create its folder ({error.strerror or error})") from None
        with self._errors():
            # isolation_level=None: no implicit transactions; each write opens its own with BEGIN IMMEDIATE.
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    # -- connection, schema, transactions --------------------------------------------------------------------

    def _open(self) -> None:
        with self._errors():
            self._db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._db.execute("PRAGMA foreign_keys = ON")
            tables = self._tables()  # the first read: a file that is not SQLite fails here
            if tables and not set(_TABLES) <= tables:
                raise RegistryError(f"{self.path}: is not a concept-encoder registry "
                                    f"(it holds other tables: {', '.join(sorted(tables))})")
            self._db.execute("PRAGMA journal_mode = WAL")  # stored in the file: set once, kept by every opener
            # With WAL, NORMAL keeps every commit atomic; only a power cut can drop the latest one.
            self._db.execute("PRAGMA synchronous = NORMAL")
            if not tables:
                self._create_schema()
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RegistryError(f"{self.path}: written by a newer concept-encoder (schema {version}, "
                                f"this one reads up to {SCHEMA_VERSION}); upgrade the package")

    def _tables(self) -> set[str]:
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        return {row[0] for row in rows}

    def _create_schema(self) -> None:
        with self._transaction() as db:
            if self._tables():  # another process created it while we looked
                return
            for statement in _TABLES.values():
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3 errors -> RegistryError with a message a user can act on."""
        try:
            yield
        except sqlite3.Error as error:
            text = str(error)
            if "not a database" in text or "malformed" in text:
                message = f"is not a concept-encoder registry ({text})"
            elif "locked" in text or "busy" in text:
                message = f"database is locked by another process (waited {self.timeout:g} s); try again later"
            else:
                message = text
            raise RegistryError(f"{self.path}: {message}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of the block's rows land, or none do."""
        with self._errors():
            # IMMEDIATE takes the write lock up front, so two writers queue here (busy_timeout)
            # rather than both reading and then one failing at its first write.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, so a run and its metrics are read from the same moment."""
        with self._errors():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------------------------------

    def record_run(
        self,
        run_id: str,
        *,
        run_dir: str | Path,
        config: dict[str, Any],
        git_commit: str | None = None,
        status: str = "running",
        created: str | datetime | None = None,
        notes: str | None = None,
    ) -> None:
        """Add a run or update it (its metrics and artefacts are kept); `created` is kept unless given. A run id is
        one run folder: the same id for another folder is refused (`check_run_id`)."""
        if not run_id:
            raise RegistryError(f"{self.path}: a run needs a non-empty id")
        self._check_status(status)
        self.check_run_id(run_id, run_dir)
        now = _now()
        row = {"run_id": run_id, "created": _timestamp(created) if created else now, "keep_created": created is None,
               "updated": now, "status": status, "run_dir": str(run_dir), "git_commit": git_commit,
               "config_json": json.dumps(config, default=str), "notes": notes}
        with self._transaction() as db:
            db.execute(_UPSERT_RUN, row)

    @staticmethod
    def has_runs_file(path: str | Path) -> bool:
        """Whether the database at `path` holds at least one run (False for a missing or unreadable file)."""
        try:
            with Registry(path) as registry:
                return bool(registry.list_runs())
        except RegistryError:
            return False

    def check_run_id(self, run_id: str, run_dir: str | Path) -> None:
        """Refuse a run id already recorded for another folder (two output roots, one `training.run_name`): its row
        would otherwise take the second run's folder and keep the first run's metrics."""
        with self._snapshot() as db:
            row = db.execute("SELECT run_dir FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None and Path(row["run_dir"]).resolve() != Path(run_dir).resolve():
            raise RegistryError(f"{self.path}: run {run_id!r} is already recorded for {row['run_dir']}, not "
                                f"{Path(run_dir).resolve()}; give this run another training.run_name, or use "
                                "another registry (--registry)")

    def set_status(self, run_id: str, status: str) -> None:
        self._check_status(status)
        with self._transaction() as db:
            self._touch(db, run_id, status=status)

    def record_metrics(self, run_id: str, stage: str, metrics: Mapping[str, Any]) -> None:
        """Upsert {key: value | (value, std) | {"mean": .., "std": ..}} under `stage`, all in one transaction.

        Non-finite values are stored as NULL; a value that is not a number fails the whole call.
        """
        with self._transaction() as db:
            self._touch(db, run_id)
            for key, given in metrics.items():
                try:
                    value, std = _value_std(given)
                except TypeError as error:
                    raise RegistryError(f"{self.path}: run {run_id}, metric {stage}/{key}: {error} "
                                        "(nothing of this call was recorded)") from None
                db.execute(_UPSERT_METRIC, (run_id, stage, key, value, std))

    def record_artefacts(self, run_id: str, artefacts: Mapping[str, str | Path]) -> None:
        with self._transaction() as db:
            self._touch(db, run_id)
            db.executemany(_UPSERT_ARTEFACT, [(run_id, name, str(path)) for name, path in artefacts.items()])

    def _touch(self, db: sqlite3.Connection, run_id: str, status: str | None = None) -> None:
        """Stamp `updated` (and the status); an unknown run fails here, inside the caller's transaction."""
        done = db.execute("UPDATE runs SET updated = ?, status = COALESCE(?, status) WHERE run_id = ?",
                          (_now(), status, run_id))
        if done.rowcount == 0:
            raise RegistryError(f"{self.path}: unknown run id {run_id!r} (record_run it first)")

    def _check_status(self, status: str) -> None:
        if status not in STATUSES:
            raise RegistryError(f"{self.path}: status {status!r} is not one of {', '.join(STATUSES)}")

    # -- reads -----------------------------------------------------------------------------------------------

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run, newest first: id, created, updated, status, run_dir, git_commit, headline {stage.key: value}."""
        marks = ", ".join("?" * len(HEADLINE_METRICS))
        with self._snapshot() as db:
            runs = db.execute(f"SELECT run_id, created, updated, status, run_dir, git_commit FROM runs {_NEWEST_FIRST}")
            rows = [{**dict(run), "headline": {}} for run in runs]
            metrics = db.execute(f"SELECT run_id, stage || '.' || key AS name, value FROM metrics "
                                 f"WHERE stage || '.' || key IN ({marks})", HEADLINE_METRICS).fetchall()
        by_id = {row["run_id"]: row for row in rows}
        for metric in metrics:
            by_id[metric["run_id"]]["headline"][metric["name"]] = metric["value"]
        return rows

    def resolve(self, run_ref: str) -> str:
        """The run id `run_ref` names: itself, else the one id starting with it, else the one id containing it."""
        with self._snapshot() as db:
            ids = [row[0] for row in db.execute(f"SELECT run_id FROM runs {_NEWEST_FIRST}")]
        return self._match(run_ref, ids)

    def _match(self, run_ref: str, ids: list[str]) -> str:
        if run_ref in ids:
            return run_ref
        if not run_ref:
            raise RegistryError(f"{self.path}: an empty run reference matches nothing")
        matches = [i for i in ids if i.startswith(run_ref)] or [i for i in ids if run_ref in i]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise RegistryError(f"{self.path}: {run_ref!r} is ambiguous, it matches {len(matches)} runs: "
                                f"{', '.join(matches)}; give more of the id")
        more = ", …" if len(ids) > 5 else ""
        known = f"newest known: {', '.join(ids[:5])}{more}" if ids else "no runs recorded yet"
        raise RegistryError(f"{self.path}: unknown run id {run_ref!r} ({known})")

    def get(self, run_ref: str) -> dict[str, Any]:
        """One run: its fields, config (dict), metrics {stage: {key: {"value", "std"}}} and artefacts {name: path}."""
        with self._snapshot() as db:
            ids = [row[0] for row in db.execute(f"SELECT run_id FROM runs {_NEWEST_FIRST}")]
            run_id = self._match(run_ref, ids)
            run = dict(db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())
            metric_rows = db.execute("SELECT stage, key, value, std FROM metrics WHERE run_id = ? ORDER BY stage, key",
                                     (run_id,)).fetchall()
            artefact_rows = db.execute("SELECT name, path FROM artefacts WHERE run_id = ? ORDER BY name",
                                       (run_id,)).fetchall()
        metrics: dict[str, dict[str, dict[str, float | None]]] = {}
        for row in metric_rows:
            metrics.setdefault(row["stage"], {})[row["key"]] = {"value": row["value"], "std": row["std"]}
        return {"run_id": run["run_id"], "created": run["created"], "updated": run["updated"],
                "status": run["status"], "run_dir": run["run_dir"], "git_commit": run["git_commit"],
                "notes": run["notes"], "config": json.loads(run["config_json"]), "metrics": metrics,
                "artefacts": {row["name"]: row["path"] for row in artefact_rows}}
