"""The enrolled-people store: one SQLite file of L2-normalised face templates.

Durability: the file is in WAL journal mode with ``synchronous=FULL``. In WAL mode,
``NORMAL`` only syncs at checkpoints, so a power cut can roll back the last transactions
even though ``enroll`` had returned; ``FULL`` fsyncs the WAL on every commit, so once
``enroll`` returns the person survives a crash *or* a power loss. The cost is one fsync
per enroll/rename/remove, which is negligible for an admin operation. Each write is one
``BEGIN IMMEDIATE`` transaction, so a crash mid-enroll leaves either the whole person or
nothing. (An SD card that acknowledges flushes it has not done can still lose data; no
software setting fixes that.)

Concurrency: WAL lets readers (the kiosk) run while one writer (an admin tool) commits;
writers wait up to ``busy_timeout`` seconds for each other, then get a GalleryError.
Each connection caches the template matrix and reloads it when ``PRAGMA data_version``
says another connection has committed, so the kiosk sees enrolments without a restart.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from ._errors import GalleryError, GalleryModelMismatchError, UnknownPersonError
from ._matching import IdentifyResult, TemplateGroups, identify_embeddings, identify_many

__all__ = ["Gallery", "PersonInfo", "SCHEMA_VERSION"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 256
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PAGE_SIZE = 16384
# How corruption reads in messages of Pythons older than 3.11 (no sqlite_errorname).
_CORRUPTION_SYMPTOMS = ("malformed", "not a database", "corrupt", "no such table", "no such column")
_SITE_KEY = "site_calibration"  # meta key: a JSON list of SiteCalibration records
_MIN_NORM = 1e-6  # below this an embedding is numerically zero and has no direction

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE templates (
        id INTEGER PRIMARY KEY,
        person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
        embedding BLOB NOT NULL,
        source TEXT,
        created REAL NOT NULL
    )""",
    "CREATE INDEX templates_by_person ON templates(person_id)",
)

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class PersonInfo:
    """One enrolled person as :meth:`Gallery.people` lists them (times are UTC)."""

    name: str
    templates: int
    created: datetime
    updated: datetime


@dataclass(frozen=True, eq=False)
class _Snapshot:
    matrix: np.ndarray  # (N, D) float32, read-only, rows grouped by person
    labels: tuple[str, ...]
    groups: TemplateGroups
    data_version: int


class Gallery:
    """A face gallery file. Open with :meth:`Gallery.open`; use as a context manager.

    One Gallery object may be shared between threads (calls are serialised by a lock);
    separate processes open their own.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        model_fingerprint: Optional[str],
        embedding_size: Optional[int],
        create: bool = True,
        readonly: bool = False,
        busy_timeout: float = 5.0,
    ) -> None:
        # model_fingerprint=None (only via open_existing) adopts the file's own model and
        # disables enroll/identify, since no model is there to be checked against.
        self._model_bound = model_fingerprint is not None
        if self._model_bound:
            if not isinstance(model_fingerprint, str) or not model_fingerprint.strip():
                raise GalleryError(f"model_fingerprint must be a non-empty string, got {model_fingerprint!r}")
            if not _is_positive_int(embedding_size):
                raise GalleryError(f"embedding_size must be a positive integer, got {embedding_size!r}")
        elif create or embedding_size is not None:
            raise GalleryError(
                "a gallery opened without a model fingerprint must already exist; use Gallery.open_existing"
            )
        if not (isinstance(busy_timeout, (int, float)) and busy_timeout >= 0):
            raise GalleryError(f"busy_timeout must be a number of seconds >= 0, got {busy_timeout!r}")
        self.path = Path(os.fspath(path)).expanduser().absolute()
        self.readonly = bool(readonly)
        # Model-bound: both are given (checked above); else both are read from the file.
        self.embedding_size = int(embedding_size) if embedding_size is not None else 0
        self._fingerprint = _normalize_fingerprint(model_fingerprint) if model_fingerprint is not None else ""
        self._busy_timeout = float(busy_timeout)
        self._create = bool(create)
        self._lock = threading.RLock()
        self._snapshot: Optional[_Snapshot] = None
        self._site_cache: Optional[tuple] = None  # (data_version, {far: SiteCalibration})
        self._conn: Optional[sqlite3.Connection] = None
        self.created: Optional[datetime] = None

        if self.path.is_dir():
            raise GalleryError(
                f"gallery path {self.path} is a directory; give a file name such as {self.path / 'gallery.db'}"
            )
        exists = self.path.exists()
        if not exists and (readonly or not create):
            why = "readonly=True" if readonly else "create=False"
            raise GalleryError(
                f"no gallery at {self.path} (opened with {why}); check the path, "
                "or open with create=True to start a new gallery"
            )
        if not exists and not self.path.parent.is_dir():
            raise GalleryError(f"cannot create gallery {self.path}: directory {self.path.parent} does not exist")

        if exists:
            self._check_file_header()

        mode = "ro" if readonly else ("rwc" if create else "rw")
        with self._translate_errors("opening the gallery"):
            self._conn = sqlite3.connect(
                f"{self.path.as_uri()}?mode={mode}",
                uri=True,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock instead
            )
        try:
            self._initialize(newly_created=not exists)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        path: PathLike,
        *,
        model_fingerprint: str,
        embedding_size: int,
        create: bool = True,
        readonly: bool = False,
        busy_timeout: float = 5.0,
    ) -> "Gallery":
        """Open (or, with ``create=True``, create) the gallery at ``path``.

        Raises GalleryModelMismatchError if the file was enrolled with another model,
        GalleryError if it is corrupt, not a gallery, from a newer edgeface, or locked.
        """
        return cls(
            path,
            model_fingerprint=model_fingerprint,
            embedding_size=embedding_size,
            create=create,
            readonly=readonly,
            busy_timeout=busy_timeout,
        )

    @classmethod
    def open_existing(cls, path: PathLike, *, readonly: bool = False, busy_timeout: float = 5.0) -> "Gallery":
        """Open an existing gallery without a model, for admin work (list, rename, remove, backup).

        The gallery's own model fingerprint and embedding size are adopted; enroll and
        identify are refused because there is no model in hand to check them against.
        """
        return cls(
            path,
            model_fingerprint=None,
            embedding_size=None,
            create=False,
            readonly=readonly,
            busy_timeout=busy_timeout,
        )

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; idempotent. Later calls raise GalleryError."""
        with self._lock:
            conn, self._conn = self._conn, None
            self._snapshot = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self.readonly else "read-write")
        return f"<Gallery {str(self.path)!r} {state}>"

    @property
    def model_fingerprint(self) -> str:
        return self._fingerprint

    # -- reading ---------------------------------------------------------------------

    def people(self) -> list[PersonInfo]:
        """Everyone enrolled, sorted by name."""
        with self._lock, self._translate_errors("listing people"):
            rows = self._connection().execute(
                "SELECT p.name, COUNT(t.id), p.created, p.updated FROM people p "
                "LEFT JOIN templates t ON t.person_id = p.id GROUP BY p.id ORDER BY p.name"
            ).fetchall()
        return [
            PersonInfo(name, count, _from_timestamp(created), _from_timestamp(updated))
            for name, count, created, updated in rows
        ]

    def __len__(self) -> int:
        with self._lock, self._translate_errors("counting people"):
            return self._connection().execute("SELECT COUNT(*) FROM people").fetchone()[0]

    def __contains__(self, name: object) -> bool:
        try:
            name = _clean_name(name)
        except GalleryError:
            return False
        with self._lock, self._translate_errors("looking up a person"):
            return self._connection().execute("SELECT 1 FROM people WHERE name = ?", (name,)).fetchone() is not None

    def templates(self) -> tuple[np.ndarray, list[str]]:
        """All templates as an (N, D) read-only float32 matrix and the person name of each row.

        Cached; reloaded when this or another connection (or process) changes the file.
        """
        snapshot = self._current_snapshot()
        return snapshot.matrix, list(snapshot.labels)

    def identify(self, probe, top_k: int = 1, *, threshold: float, far: Optional[float] = None) -> IdentifyResult:
        """The ``top_k`` best-matching people for one probe embedding, best first."""
        self._require_model("identify")
        snapshot = self._current_snapshot()
        return identify_embeddings(probe, snapshot.matrix, snapshot.groups, top_k, threshold, far)

    def identify_many(
        self, probes, top_k: int = 1, *, threshold: float, far: Optional[float] = None
    ) -> list[IdentifyResult]:
        """:meth:`identify` for an (M, D) batch of probes (one matrix product)."""
        self._require_model("identify")
        snapshot = self._current_snapshot()
        return identify_many(probes, snapshot.matrix, snapshot.groups, top_k, threshold, far)

    # -- writing ---------------------------------------------------------------------

    def enroll(
        self,
        name: str,
        embeddings,
        *,
        sources: Optional[Sequence[Optional[str]]] = None,
        replace: bool = False,
    ) -> int:
        """Add one or more templates for ``name`` in one transaction; returns the person id.

        ``embeddings`` is (K, D) or a single (D,) vector; each is L2-normalised before it is
        stored. A new name creates the person; an existing one gains templates, or with
        ``replace=True`` has its old templates deleted in the same transaction.
        ``sources`` optionally records where each template came from (e.g. an image path).
        """
        self._require_model("enroll")
        name = _clean_name(name)
        unit = self._validate_embeddings(embeddings)
        if sources is None:
            sources = [None] * len(unit)
        else:
            sources = list(sources)
            if len(sources) != len(unit):
                raise GalleryError(
                    f"got {len(sources)} sources for {len(unit)} embeddings; give one source per embedding or none"
                )
            for source in sources:
                if source is not None and not isinstance(source, str):
                    raise GalleryError(f"each source must be a string or None, got {source!r}")
        blobs = [row.astype("<f4").tobytes() for row in unit]
        now = _now()
        with self._write_transaction(f"enrolling {name!r}") as conn:
            row = conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            person_id: int
            if row is None:
                inserted = conn.execute(
                    "INSERT INTO people (name, created, updated) VALUES (?, ?, ?)", (name, now, now)
                ).lastrowid
                if inserted is None:  # pragma: no cover - SQLite sets it after every INSERT
                    raise GalleryError(f"SQLite did not return the new row of {name!r} in {self.path}")
                person_id = inserted
            else:
                person_id = int(row[0])
                if replace:
                    conn.execute("DELETE FROM templates WHERE person_id = ?", (person_id,))
                conn.execute("UPDATE people SET updated = ? WHERE id = ?", (now, person_id))
            conn.executemany(
                "INSERT INTO templates (person_id, embedding, source, created) VALUES (?, ?, ?, ?)",
                [(person_id, blob, source, now) for blob, source in zip(blobs, sources)],
            )
        logger.info(
            "%s %r in %s with %d template(s)",
            "created" if row is None else ("re-enrolled" if replace else "added templates to"),
            name,
            self.path,
            len(blobs),
        )
        return int(person_id)

    def rename(self, old: str, new: str) -> None:
        """Rename a person, keeping their templates."""
        old_clean, new_clean = _clean_name(old), _clean_name(new)
        with self._write_transaction(f"renaming {old_clean!r}") as conn:
            row = conn.execute("SELECT id FROM people WHERE name = ?", (old_clean,)).fetchone()
            if row is None:
                raise UnknownPersonError(f"no person named {old_clean!r} in gallery {self.path}")
            if new_clean == old_clean:
                return
            if conn.execute("SELECT 1 FROM people WHERE name = ?", (new_clean,)).fetchone() is not None:
                raise GalleryError(
                    f"cannot rename {old_clean!r} to {new_clean!r}: {new_clean!r} is already enrolled; "
                    "remove or rename that person first"
                )
            conn.execute("UPDATE people SET name = ?, updated = ? WHERE id = ?", (new_clean, _now(), row[0]))
        logger.info("renamed %r to %r in %s", old_clean, new_clean, self.path)

    def remove(self, name: str) -> None:
        """Delete a person and all their templates."""
        name = _clean_name(name)
        with self._write_transaction(f"removing {name!r}") as conn:
            row = conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownPersonError(f"no person named {name!r} in gallery {self.path}")
            conn.execute("DELETE FROM templates WHERE person_id = ?", (row[0],))
            conn.execute("DELETE FROM people WHERE id = ?", (row[0],))
        logger.info("removed %r from %s", name, self.path)

    # -- site calibration ------------------------------------------------------------
    # Stored as one JSON value in the key/value ``meta`` table, so galleries made before
    # site calibration existed need no migration (they simply have none), and an older
    # runtime opening a calibrated gallery ignores the extra key.

    def site_calibrations(self) -> dict:
        """The site thresholds stored in this gallery, by FAR (``{far: SiteCalibration}``).

        Only those of the gallery's own model are returned (a stored record whose model
        fingerprint differs is ignored with a warning: its threshold means nothing here).
        """
        with self._lock, self._translate_errors("reading the site calibration"):
            conn = self._connection()
            # Cached like the templates: verify/identify ask on every frame.
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if self._site_cache is not None and self._site_cache[0] == version:
                return dict(self._site_cache[1])
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (_SITE_KEY,)).fetchone()
        found = self._parse_site_calibrations(row)
        with self._lock:
            self._site_cache = (version, found)
        return dict(found)

    def _parse_site_calibrations(self, row) -> dict:
        from ._calibration import SiteCalibration

        if row is None:
            return {}
        try:
            records = [SiteCalibration.from_dict(item) for item in json.loads(row[0])]
        except (ValueError, TypeError) as exc:
            logger.warning("gallery %s: ignoring an unreadable site calibration (%s); run `edgeface calibrate` "
                           "again", self.path, exc)
            return {}
        found = {}
        for record in records:
            if _normalize_fingerprint(record.model_fingerprint) != self._fingerprint:
                logger.warning("gallery %s: ignoring a site threshold calibrated for model %s, not %s",
                               self.path, record.model_fingerprint[:12], self._fingerprint[:12])
                continue
            found[float(record.far)] = record
        return dict(sorted(found.items()))

    def site_calibration(self, far: Optional[float] = None):
        """The stored site calibration at ``far`` (None: the one at 1e-3, else the strictest), or None."""
        stored = self.site_calibrations()
        if not stored:
            return None
        if far is None:
            far = 1e-3 if 1e-3 in stored else min(stored)
        for known, record in stored.items():
            if abs(known - float(far)) <= 1e-12 * max(1.0, float(far)):
                return record
        return None

    def calibrate(self, far: float = 1e-3, *, model_thresholds=None, save: bool = True):
        """Calibrate a site threshold at ``far`` on the cross-person pairs of the enrolled
        templates (see :mod:`edgeface_runtime._calibration`) and, with ``save``, store it
        (replacing any earlier one at the same FAR). ``model_thresholds`` (the model
        metadata's ``{far: threshold}``) adds how the model's own threshold fares here."""
        from ._calibration import calibrate_templates, check_site_far

        self._require_model("calibrate")
        far = check_site_far(far)  # bad input stays a plain ValueError; what follows is about the gallery
        snapshot = self._current_snapshot()
        try:
            record = calibrate_templates(snapshot.matrix, snapshot.labels, far, model_fingerprint=self._fingerprint,
                                         model_thresholds=model_thresholds)
        except ValueError as exc:
            raise GalleryError(f"cannot calibrate gallery {self.path}: {exc}") from None
        if save:
            self.save_site_calibration(record)
        return record

    def save_site_calibration(self, record) -> None:
        """Store a :class:`SiteCalibration` (of this gallery's model), replacing one at the same FAR."""
        if _normalize_fingerprint(record.model_fingerprint) != self._fingerprint:
            raise GalleryModelMismatchError(
                f"this site threshold was calibrated for model {record.model_fingerprint[:12]}…, but gallery "
                f"{self.path} belongs to model {self._fingerprint[:12]}…; calibrate with the gallery's model")
        with self._write_transaction("saving the site calibration") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (_SITE_KEY,)).fetchone()
            try:
                kept = [item for item in (json.loads(row[0]) if row else [])
                        if abs(float(item["far"]) - record.far) > 1e-12 * max(1.0, record.far)]
            except (ValueError, TypeError, KeyError):
                kept = []  # an unreadable old record is replaced, not kept
            kept.append(record.to_dict())
            kept.sort(key=lambda item: float(item["far"]))
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_SITE_KEY, json.dumps(kept)))
        logger.info("stored site threshold %.4f at FAR %g (%d impostor pairs) in %s",
                    record.threshold, record.far, record.impostor_pairs, self.path)

    def clear_site_calibration(self) -> None:
        """Forget every stored site threshold (verify/identify fall back to the model's)."""
        with self._write_transaction("clearing the site calibration") as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (_SITE_KEY,))

    def template_count(self) -> int:
        """How many templates are enrolled (all people)."""
        with self._lock, self._translate_errors("counting templates"):
            return self._connection().execute("SELECT COUNT(*) FROM templates").fetchone()[0]

    def backup(self, dest_path: PathLike, *, overwrite: bool = False) -> Path:
        """Copy a consistent snapshot of the gallery to ``dest_path`` (safe while in use).

        The copy is written next to the destination and renamed into place, so a crash
        mid-backup never leaves a half-written file under ``dest_path``.
        """
        dest = Path(os.fspath(dest_path)).expanduser().absolute()
        if dest == self.path or (dest.exists() and self.path.exists() and os.path.samefile(dest, self.path)):
            raise GalleryError(f"cannot back up {self.path} onto itself; choose another destination")
        if dest.exists() and not overwrite:
            raise GalleryError(f"backup destination {dest} already exists; pass overwrite=True or choose another path")
        if not dest.parent.is_dir():
            raise GalleryError(f"backup directory {dest.parent} does not exist")
        partial = dest.with_name(dest.name + ".partial")
        partial.unlink(missing_ok=True)
        try:
            with self._lock, self._translate_errors(f"backing up to {dest}"):
                target = sqlite3.connect(str(partial), isolation_level=None)
                try:
                    self._connection().backup(target)
                finally:
                    target.close()
            _fsync_file(partial)
            os.replace(partial, dest)
            _fsync_directory(dest.parent)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        logger.info("backed up %s to %s", self.path, dest)
        return dest

    # -- internals -------------------------------------------------------------------

    def _require_model(self, action: str) -> None:
        if not self._model_bound:
            raise GalleryError(
                f"gallery {self.path} was opened without a model (open_existing), so it cannot {action}: "
                "open it with Gallery.open(path, model_fingerprint=..., embedding_size=...) from the model in use"
            )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise GalleryError(f"gallery {self.path} is closed; open it again with Gallery.open")
        return self._conn

    def _check_file_header(self) -> None:
        # SQLite treats a file too short to hold a header as an empty database and would
        # happily turn a truncated gallery into a new, empty one. Only a 0-byte file (e.g.
        # from mktemp) may become a gallery; anything else must start with SQLite's magic.
        try:
            with open(self.path, "rb") as file:
                head = file.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            message = f"cannot read gallery {self.path}: {exc.strerror or exc}; check its permissions"
            raise GalleryError(message) from exc
        if head and head != _SQLITE_MAGIC:
            raise self._corrupt_error("no SQLite header")

    def _initialize(self, newly_created: bool) -> None:
        conn = self._connection()
        with self._translate_errors("checking the gallery file"):
            # Runs before anything else touches the file: garbage, truncation and broken pages
            # surface here as one clear error rather than later as odd query failures.
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise self._corrupt_error("; ".join(problems[:3]))
            conn.execute("PRAGMA synchronous = FULL")  # per connection; see module docstring
            conn.execute("PRAGMA foreign_keys = ON")
            if not self.readonly:
                # Only takes effect on a new, empty file (ignored otherwise), and must come
                # before WAL writes the header. 4 KiB pages hold one 512-d template (2 KiB
                # + overhead) each and waste half the file; 16 KiB pages hold seven.
                conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    logger.warning(
                        "gallery %s could not switch to WAL (journal_mode=%s); readers may block writers",
                        self.path,
                        mode,
                    )
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

        if not tables:
            if self.readonly or not self._create:
                raise GalleryError(
                    f"{self.path} is an empty file, not an edgeface gallery; open it with create=True to make one"
                )
            with self._write_transaction("creating the gallery") as conn:
                # Another process may have created it since we looked; the write lock settles the race.
                if conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [
                            ("schema_version", str(SCHEMA_VERSION)),
                            ("model_fingerprint", self._fingerprint),
                            ("embedding_size", str(self.embedding_size)),
                            ("created", datetime.now(timezone.utc).isoformat(timespec="seconds")),
                        ],
                    )
                    logger.info(
                        "created gallery %s for model %s (%d-d embeddings)",
                        self.path,
                        self._fingerprint[:12],
                        self.embedding_size,
                    )
            if newly_created:
                _fsync_directory(self.path.parent)  # so the new file's directory entry survives a power cut
        elif "meta" not in tables:
            raise GalleryError(
                f"{self.path} is an SQLite database but not an edgeface gallery (tables: {', '.join(sorted(tables))}); "
                "choose another file name for the gallery"
            )
        self._check_meta()

    def _check_meta(self) -> None:
        with self._lock, self._translate_errors("reading the gallery header"):
            meta = dict(self._connection().execute("SELECT key, value FROM meta").fetchall())
        try:
            schema_version = int(meta["schema_version"])
            stored_fingerprint = meta["model_fingerprint"]
            stored_size = int(meta["embedding_size"])
        except (KeyError, ValueError) as exc:
            raise self._corrupt_error(f"gallery header is incomplete or invalid ({exc!r})") from None
        if schema_version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path} was written by a newer edgeface (gallery schema v{schema_version}; this version reads "
                f"up to v{SCHEMA_VERSION}); upgrade edgeface-runtime to use it"
            )
        if schema_version < 1 or stored_size < 1 or not stored_fingerprint.strip():
            raise self._corrupt_error("gallery header has an invalid schema version, model or embedding size")
        if not self._model_bound:
            self._fingerprint, self.embedding_size = _normalize_fingerprint(stored_fingerprint), stored_size
        if _normalize_fingerprint(stored_fingerprint) != self._fingerprint:
            raise GalleryModelMismatchError(
                f"gallery {self.path} was enrolled with model {stored_fingerprint[:12]}…, but the model in use is "
                f"{self._fingerprint[:12]}…; embeddings from different models cannot be compared. Re-enroll the "
                f"people with `edgeface enroll` into a new gallery, or load the original model "
                f"({stored_fingerprint[:12]}…)."
            )
        if stored_size != self.embedding_size:
            raise GalleryModelMismatchError(
                f"gallery {self.path} stores {stored_size}-d embeddings but the model in use makes "
                f"{self.embedding_size}-d ones; use the model the gallery was enrolled with, or a new gallery"
            )
        try:
            self.created = datetime.fromisoformat(meta.get("created", ""))
        except ValueError:
            self.created = None

    def _validate_embeddings(self, embeddings) -> np.ndarray:
        try:
            array = np.asarray(embeddings, dtype=np.float64)
        except (TypeError, ValueError):
            raise GalleryError(
                f"embeddings must be a numeric (K, {self.embedding_size}) array, got {type(embeddings).__name__}"
            ) from None
        if array.ndim == 1:
            array = array[np.newaxis, :]
        if array.ndim != 2 or array.shape[0] == 0:
            raise GalleryError(
                f"embeddings must be a (K, {self.embedding_size}) array with K >= 1, got shape {array.shape}"
            )
        if array.shape[1] != self.embedding_size:
            raise GalleryError(
                f"embeddings have {array.shape[1]} values but gallery {self.path} stores {self.embedding_size}-d "
                "embeddings; use the model the gallery was created with"
            )
        if not np.all(np.isfinite(array)):
            raise GalleryError("embeddings contain NaN or infinity; check the model output before enrolling")
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        if np.any(norms < _MIN_NORM):
            raise GalleryError(
                "an embedding is all zeros (or nearly), so it has no direction to compare; re-embed the face"
            )
        return (array / norms).astype(np.float32)

    def _current_snapshot(self) -> _Snapshot:
        with self._lock, self._translate_errors("loading templates"):
            conn = self._connection()
            # Read the version *before* the rows: a commit landing in between then only costs
            # an extra reload next time, never a stale cache.
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if self._snapshot is not None and self._snapshot.data_version == version:
                return self._snapshot
            rows = conn.execute(
                "SELECT p.name, t.embedding FROM people p JOIN templates t ON t.person_id = p.id ORDER BY p.name, t.id"
            ).fetchall()
        row_bytes = 4 * self.embedding_size
        bad = next((name for name, blob in rows if not isinstance(blob, bytes) or len(blob) != row_bytes), None)
        if bad is not None:
            raise self._corrupt_error(f"a template of {bad!r} is not a {self.embedding_size}-d float32 embedding")
        matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4").astype(np.float32)
        matrix = matrix.reshape(len(rows), self.embedding_size)
        matrix.flags.writeable = False  # shared with callers of templates(); must not drift from the file
        labels = tuple(name for name, _ in rows)
        snapshot = _Snapshot(matrix, labels, TemplateGroups.from_labels(labels), version)
        with self._lock:
            if self._conn is not None:
                self._snapshot = snapshot
        logger.debug("loaded %d templates of %d people from %s", len(rows), len(snapshot.groups.names), self.path)
        return snapshot

    @contextmanager
    def _write_transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise GalleryError(f"gallery {self.path} is open read-only; open it with readonly=False to allow {action}")
        with self._lock, self._translate_errors(action):
            conn = self._connection()
            # IMMEDIATE takes the write lock up front, so waiting for another writer happens
            # here under busy_timeout instead of failing half-way through.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
            finally:
                self._snapshot = None  # our own commits do not change our data_version
                self._site_cache = None

    @contextmanager
    def _translate_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._gallery_error(exc, action) from exc

    def _gallery_error(self, exc: sqlite3.Error, action: str) -> GalleryError:
        code = getattr(exc, "sqlite_errorname", "") or ""  # Python >= 3.11
        message = str(exc)
        lowered = message.lower()
        if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in lowered or "busy" in lowered:
            return GalleryError(
                f"gallery {self.path} is locked by another writer (waited {self._busy_timeout:g} s while {action}); "
                "retry, or stop the other process writing to it"
            )
        if code.startswith("SQLITE_READONLY") or "readonly" in lowered or "read-only" in lowered:
            return GalleryError(
                f"cannot write gallery {self.path} while {action}: {message}; check file and directory permissions"
            )
        if code.startswith("SQLITE_CANTOPEN") or "unable to open" in lowered:
            return GalleryError(f"cannot open gallery {self.path}: {message}; check the path and its permissions")
        if code.startswith("SQLITE_FULL") or "disk is full" in lowered:
            return GalleryError(
                f"disk full while {action} in {self.path}; nothing was saved, free some space and retry"
            )
        if code.startswith("SQLITE_IOERR") or "disk i/o error" in lowered:
            return GalleryError(f"I/O error while {action} in {self.path}: {message}; check the storage device")
        if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or any(
            symptom in lowered for symptom in _CORRUPTION_SYMPTOMS
        ):
            return self._corrupt_error(message)
        return GalleryError(f"gallery {self.path}: {action} failed: {message}")

    def _corrupt_error(self, detail: str) -> GalleryError:
        return GalleryError(
            f"{self.path} is not a readable edgeface gallery ({detail}); the file is corrupt or is not a gallery. "
            "Restore it from a backup copy, or move it aside and enroll again"
        )


def _clean_name(name: object) -> str:
    if not isinstance(name, str):
        raise GalleryError(f"a person's name must be a string, got {type(name).__name__}: {name!r}")
    # NFC so "José" typed on two keyboards (composed vs combining accent) is one person.
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise GalleryError(f"a person's name must not be empty, got {name!r}")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in cleaned):
        raise GalleryError(f"a person's name must not contain control characters or line breaks, got {name!r}")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise GalleryError(f"a person's name must be at most {MAX_NAME_LENGTH} characters, got {len(cleaned)}")
    return cleaned


def _is_positive_int(value: object) -> bool:
    return bool(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1)


def _normalize_fingerprint(fingerprint: str) -> str:
    return fingerprint.strip().lower()


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()


def _from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds if math.isfinite(seconds) else 0.0, tz=timezone.utc)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    # Best effort: not every platform/filesystem lets a directory be opened and synced.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
