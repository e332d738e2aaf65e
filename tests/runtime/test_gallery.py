"""Tests for edgeface_runtime._gallery (numpy + stdlib only; no TensorFlow)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeface_runtime._errors import GalleryError, GalleryModelMismatchError, UnknownPersonError
from edgeface_runtime._gallery import SCHEMA_VERSION, Gallery, PersonInfo

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime"
FINGERPRINT = "3f2a9c1b7d4e" + "0" * 52
OTHER_FINGERPRINT = "c0ffee123456" + "1" * 52
DIM = 16


def _embeddings(seed: int, count: int = 1, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, dim))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _open(path, **kwargs) -> Gallery:
    kwargs.setdefault("model_fingerprint", FINGERPRINT)
    kwargs.setdefault("embedding_size", DIM)
    return Gallery.open(path, **kwargs)


@pytest.fixture
def gallery_path(tmp_path: Path) -> Path:
    return tmp_path / "gallery.db"


@pytest.fixture
def gallery(gallery_path: Path):
    with _open(gallery_path) as opened:
        yield opened


# -- enroll / list / rename / remove ------------------------------------------------


def test_enroll_list_rename_remove(gallery: Gallery):
    assert len(gallery) == 0 and gallery.people() == []
    alice_id = gallery.enroll("alice", _embeddings(1, 3), sources=["a1.jpg", "a2.jpg", None])
    bob_id = gallery.enroll("  bob  ", _embeddings(2)[0])  # name is stripped; a single vector is fine
    assert isinstance(alice_id, int) and alice_id != bob_id
    assert len(gallery) == 2
    assert "alice" in gallery and "bob" in gallery and "carol" not in gallery
    assert 42 not in gallery and "" not in gallery
    people = gallery.people()
    assert [(p.name, p.templates) for p in people] == [("alice", 3), ("bob", 1)]
    assert all(isinstance(p, PersonInfo) and p.created <= p.updated and p.created.tzinfo for p in people)

    gallery.rename("alice", "alice smith")
    assert "alice" not in gallery and "alice smith" in gallery
    matrix, labels = gallery.templates()
    assert labels.count("alice smith") == 3

    gallery.remove("bob")
    assert [p.name for p in gallery.people()] == ["alice smith"]
    assert gallery.templates()[0].shape == (3, DIM)


def test_enroll_existing_person_adds_templates_and_replace_reenrolls(gallery: Gallery):
    first_id = gallery.enroll("alice", _embeddings(1, 2))
    created = gallery.people()[0].created
    assert gallery.enroll("alice", _embeddings(2, 1)) == first_id
    assert gallery.people()[0].templates == 3
    new = _embeddings(3, 2)
    assert gallery.enroll("alice", new, replace=True) == first_id
    person = gallery.people()[0]
    assert person.templates == 2 and person.created == created and person.updated >= created
    matrix, labels = gallery.templates()
    np.testing.assert_allclose(matrix, _unit(new), atol=1e-6)
    assert gallery.enroll("newcomer", _embeddings(4), replace=True) != first_id  # replace on a new name creates


def test_templates_are_stored_normalised_float32(gallery: Gallery):
    raw = _embeddings(5, 4) * 37.0
    gallery.enroll("x", raw)
    matrix, labels = gallery.templates()
    assert matrix.dtype == np.float32 and matrix.shape == (4, DIM)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(matrix, _unit(raw), atol=1e-6)
    assert not matrix.flags.writeable  # the cache cannot be corrupted by a caller
    with sqlite3.connect(gallery.path) as raw_db:
        blob, source = raw_db.execute("SELECT embedding, source FROM templates ORDER BY id LIMIT 1").fetchone()
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4"), matrix[0])
    assert source is None


def test_rename_and_remove_errors(gallery: Gallery):
    gallery.enroll("alice", _embeddings(1))
    gallery.enroll("bob", _embeddings(2))
    with pytest.raises(UnknownPersonError, match="carol"):
        gallery.rename("carol", "dave")
    with pytest.raises(GalleryError, match="already enrolled"):
        gallery.rename("alice", "bob")
    with pytest.raises(UnknownPersonError, match="carol"):
        gallery.remove("carol")
    with pytest.raises(KeyError):  # UnknownPersonError is also a KeyError
        gallery.remove("carol")
    gallery.rename("alice", "alice")  # no-op
    assert [p.name for p in gallery.people()] == ["alice", "bob"]


@pytest.mark.parametrize("bad_name", ["", "   ", "a\nb", "tab\there", "nul\x00", 7, None, "x" * 300])
def test_enroll_rejects_bad_names(gallery: Gallery, bad_name):
    with pytest.raises(GalleryError, match="name"):
        gallery.enroll(bad_name, _embeddings(1))
    assert len(gallery) == 0


def test_names_are_unicode_normalised(gallery: Gallery):
    gallery.enroll("Jos\u00e9", _embeddings(1))  # composed é
    assert "Jose\u0301" in gallery  # e + combining accent
    gallery.enroll("Jose\u0301", _embeddings(2))
    assert [(p.name, p.templates) for p in gallery.people()] == [("Jos\u00e9", 2)]


@pytest.mark.parametrize(
    "embeddings, message",
    [
        (np.ones((2, DIM + 1)), rf"{DIM + 1} values .*{DIM}-d"),
        (np.full((1, DIM), np.nan), "NaN"),
        (np.zeros((1, DIM)), "zeros"),
        (np.zeros((0, DIM)), "K >= 1"),
        (np.ones((2, 2, DIM)), "shape"),
        ("not numbers", "numeric"),
    ],
)
def test_enroll_rejects_bad_embeddings(gallery: Gallery, embeddings, message):
    with pytest.raises(GalleryError, match=message):
        gallery.enroll("alice", embeddings)
    assert len(gallery) == 0


def test_enroll_rejects_mismatched_sources(gallery: Gallery):
    with pytest.raises(GalleryError, match="2 sources for 3 embeddings"):
        gallery.enroll("alice", _embeddings(1, 3), sources=["a", "b"])
    with pytest.raises(GalleryError, match="source"):
        gallery.enroll("alice", _embeddings(1, 1), sources=[Path("a.jpg")])
    assert "alice" not in gallery


def test_identify_uses_max_over_templates_and_threshold(gallery: Gallery):
    people = {f"person{i}": _embeddings(100 + i, 3) for i in range(40)}
    for name, embeddings in people.items():
        gallery.enroll(name, embeddings)
    probe = people["person17"][2] + 0.05 * _embeddings(999)[0]
    result = gallery.identify(probe, top_k=3, threshold=0.6, far=1e-3)
    assert result.best is not None and result.best.name == "person17"
    assert len(result.matches) == 3 and result.far == 1e-3
    assert gallery.identify(probe, threshold=0.9999).best is None
    batch = gallery.identify_many(np.stack([probe, people["person3"][0]]), top_k=1, threshold=0.6)
    assert [r.best.name for r in batch] == ["person17", "person3"]
    with pytest.raises(ValueError, match=rf"\b{DIM + 2}\b.*\b{DIM}\b"):
        gallery.identify(np.ones(DIM + 2), threshold=0.5)


def test_identify_on_empty_gallery(gallery: Gallery):
    assert gallery.identify(np.ones(DIM), top_k=5, threshold=0.5).matches == ()
    matrix, labels = gallery.templates()
    assert matrix.shape == (0, DIM) and labels == []


# -- persistence and opening --------------------------------------------------------


def test_persistence_across_reopen(gallery_path: Path):
    with _open(gallery_path) as gallery:
        gallery.enroll("alice", _embeddings(1, 2))
        gallery.enroll("bob", _embeddings(2, 3))
        before_matrix, before_labels = gallery.templates()
        before_people = gallery.people()
    with pytest.raises(GalleryError, match="closed"):
        gallery.people()
    with _open(gallery_path, create=False) as reopened:
        assert reopened.people() == before_people
        matrix, labels = reopened.templates()
        np.testing.assert_array_equal(matrix, before_matrix)
        assert labels == before_labels
        assert reopened.created is not None
        assert reopened.model_fingerprint == FINGERPRINT and reopened.embedding_size == DIM


def test_sqlite_settings(gallery: Gallery):
    connection = sqlite3.connect(gallery.path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA page_size").fetchone()[0] == 16384
        meta = dict(connection.execute("SELECT key, value FROM meta"))
    finally:
        connection.close()
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["model_fingerprint"] == FINGERPRINT
    assert meta["embedding_size"] == str(DIM)
    assert gallery._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_fingerprint_mismatch_is_refused_with_both_fingerprints(gallery_path: Path):
    _open(gallery_path).close()
    with pytest.raises(GalleryModelMismatchError) as excinfo:
        _open(gallery_path, model_fingerprint=OTHER_FINGERPRINT)
    message = str(excinfo.value)
    assert FINGERPRINT[:12] in message and OTHER_FINGERPRINT[:12] in message
    assert "edgeface enroll" in message
    # Case and whitespace of the hex digest do not matter.
    _open(gallery_path, model_fingerprint=f" {FINGERPRINT.upper()} ").close()


def test_embedding_size_mismatch_is_refused(gallery_path: Path):
    _open(gallery_path).close()
    with pytest.raises(GalleryModelMismatchError, match=rf"{DIM}-d.*{DIM * 2}-d"):
        _open(gallery_path, embedding_size=DIM * 2)


def test_missing_file_without_create(tmp_path: Path):
    with pytest.raises(GalleryError, match="no gallery"):
        _open(tmp_path / "absent.db", create=False)
    with pytest.raises(GalleryError, match="no gallery"):
        _open(tmp_path / "absent.db", readonly=True)
    with pytest.raises(GalleryError, match="does not exist"):
        _open(tmp_path / "no-such-dir" / "g.db")
    with pytest.raises(GalleryError, match="directory"):
        _open(tmp_path)
    assert not (tmp_path / "absent.db").exists()


def test_empty_file_becomes_a_gallery(tmp_path: Path):
    path = tmp_path / "empty.db"
    path.touch()
    with _open(path) as gallery:
        gallery.enroll("alice", _embeddings(1))
    with _open(path) as gallery:
        assert "alice" in gallery


def test_empty_file_is_not_a_gallery_without_create(tmp_path: Path):
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(GalleryError, match="empty file"):
        _open(path, create=False)
    with pytest.raises(GalleryError, match="empty file"):
        Gallery.open_existing(path)


def test_open_existing_is_a_model_agnostic_admin_handle(gallery_path: Path):
    with pytest.raises(GalleryError, match="no gallery"):
        Gallery.open_existing(gallery_path)
    with _open(gallery_path) as gallery:
        gallery.enroll("alice", _embeddings(1, 2))
        gallery.enroll("bob", _embeddings(2))
    with Gallery.open_existing(gallery_path, readonly=True) as admin:
        assert admin.model_fingerprint == FINGERPRINT and admin.embedding_size == DIM
        assert [(p.name, p.templates) for p in admin.people()] == [("alice", 2), ("bob", 1)]
    with Gallery.open_existing(gallery_path) as admin:
        admin.rename("alice", "alicia")
        admin.remove("bob")
        assert admin.templates()[1] == ["alicia", "alicia"]
        with pytest.raises(GalleryError, match="without a model"):
            admin.enroll("carol", _embeddings(3))
        with pytest.raises(GalleryError, match="without a model"):
            admin.identify(_embeddings(3)[0], threshold=0.5)
    with _open(gallery_path) as gallery:
        assert [p.name for p in gallery.people()] == ["alicia"]


def test_garbage_file_is_refused(tmp_path: Path):
    path = tmp_path / "garbage.db"
    path.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(GalleryError, match="backup") as excinfo:
        _open(path)
    assert str(path) in str(excinfo.value)
    path.write_bytes(b"x")  # too short for SQLite to notice: must not be silently re-initialised
    with pytest.raises(GalleryError, match="backup"):
        _open(path)
    assert path.read_bytes() == b"x"


@pytest.mark.parametrize("keep_fraction", [0.5, 0.1, 0.01])
def test_truncated_gallery_is_refused(gallery_path: Path, keep_fraction: float):
    with _open(gallery_path) as gallery:
        for i in range(60):
            gallery.enroll(f"p{i}", _embeddings(i, 4))
    data = gallery_path.read_bytes()
    assert not Path(f"{gallery_path}-wal").exists()  # checkpointed on close: the file is all there is
    gallery_path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(GalleryError, match="backup") as excinfo:
        _open(gallery_path)
    assert str(gallery_path) in str(excinfo.value)


def test_sqlite_file_that_is_not_a_gallery(tmp_path: Path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER)")
    connection.close()
    with pytest.raises(GalleryError, match="not an edgeface gallery.*invoices"):
        _open(path)


def test_newer_schema_is_refused(gallery_path: Path):
    _open(gallery_path).close()
    with sqlite3.connect(gallery_path) as connection:
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    connection.close()
    with pytest.raises(GalleryError, match="newer edgeface"):
        _open(gallery_path)


def test_invalid_open_arguments(gallery_path: Path):
    with pytest.raises(GalleryError, match="model_fingerprint"):
        _open(gallery_path, model_fingerprint="")
    with pytest.raises(GalleryError, match="embedding_size"):
        _open(gallery_path, embedding_size=0)
    assert not gallery_path.exists()


# -- concurrency --------------------------------------------------------------------


def test_reader_sees_writers_commit(gallery_path: Path):
    with _open(gallery_path) as writer, _open(gallery_path, readonly=True) as reader:
        writer.enroll("alice", _embeddings(1))
        matrix, labels = reader.templates()
        assert labels == ["alice"]
        assert reader.templates()[0] is matrix  # unchanged file: cached, not reloaded
        writer.enroll("bob", _embeddings(2, 2))
        assert reader.templates()[1] == ["alice", "bob", "bob"]
        assert reader.identify(_embeddings(2, 2)[1], threshold=0.9).best.name == "bob"
        writer.remove("alice")
        assert reader.templates()[1] == ["bob", "bob"]
        assert "alice" not in reader


def test_reader_sees_another_process_commit(gallery_path: Path):
    with _open(gallery_path) as reader:
        reader.enroll("local", _embeddings(1))
        assert reader.templates()[1] == ["local"]
        script = (
            "import sys, numpy as np\n"
            "from edgeface_runtime._gallery import Gallery\n"
            "with Gallery.open(sys.argv[1], model_fingerprint=sys.argv[2], embedding_size=int(sys.argv[3])) as g:\n"
            "    g.enroll('from-admin-tool', np.ones((2, int(sys.argv[3]))))\n"
        )
        command = [sys.executable, "-c", script, str(gallery_path), FINGERPRINT, str(DIM)]
        subprocess.run(command, env=_child_env(), check=True, timeout=60)
        assert reader.templates()[1] == ["from-admin-tool", "from-admin-tool", "local"]


def test_writer_locked_too_long_raises_gallery_error(gallery_path: Path):
    with _open(gallery_path, busy_timeout=0.2) as gallery:
        gallery.enroll("alice", _embeddings(1))
        other_writer = sqlite3.connect(gallery_path, isolation_level=None)
        try:
            other_writer.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(GalleryError, match="locked"):
                gallery.enroll("bob", _embeddings(2))
            assert time.monotonic() - started >= 0.15
            assert [p.name for p in gallery.people()] == ["alice"]  # WAL: reading still works meanwhile
            other_writer.execute("COMMIT")
        finally:
            other_writer.close()
        gallery.enroll("bob", _embeddings(2))
        assert "bob" in gallery


def test_readonly_refuses_writes(gallery_path: Path):
    with _open(gallery_path) as gallery:
        gallery.enroll("alice", _embeddings(1))
    with _open(gallery_path, readonly=True) as readonly:
        assert readonly.readonly and "alice" in readonly
        assert readonly.identify(_embeddings(1)[0], threshold=0.9).best.name == "alice"
        with pytest.raises(GalleryError, match="read-only"):
            readonly.enroll("bob", _embeddings(2))
        with pytest.raises(GalleryError, match="read-only"):
            readonly.rename("alice", "alicia")
        with pytest.raises(GalleryError, match="read-only"):
            readonly.remove("alice")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # the connection itself is mode=ro
            readonly._connection().execute("DELETE FROM people")
    with _open(gallery_path) as gallery:
        assert [p.name for p in gallery.people()] == ["alice"]


def test_backup(gallery: Gallery, tmp_path: Path):
    gallery.enroll("alice", _embeddings(1, 2))
    destination = tmp_path / "backups" / "copy.db"
    with pytest.raises(GalleryError, match="does not exist"):
        gallery.backup(destination)
    destination.parent.mkdir()
    assert gallery.backup(destination) == destination
    gallery.enroll("bob", _embeddings(2))
    with pytest.raises(GalleryError, match="already exists"):
        gallery.backup(destination)
    with pytest.raises(GalleryError, match="onto itself"):
        gallery.backup(gallery.path, overwrite=True)
    with _open(destination, create=False) as copy:
        assert [p.name for p in copy.people()] == ["alice"]
        np.testing.assert_array_equal(copy.templates()[0], gallery.templates()[0][:2])
    gallery.backup(destination, overwrite=True)
    with _open(destination, create=False) as copy:
        assert [p.name for p in copy.people()] == ["alice", "bob"]
    assert sorted(p.name for p in destination.parent.iterdir() if "partial" in p.name) == []


# -- crash safety -------------------------------------------------------------------

K_TEMPLATES = 4
CRASH_ROUNDS = 16

# The child enrolls people forever and logs each name only after enroll() has returned,
# i.e. after the commit. Every third step it re-enrolls an earlier person with
# replace=True, so kills also land inside delete-then-insert transactions.
_CRASH_CHILD = r"""
import sys, zlib
import numpy as np
from edgeface_runtime._gallery import Gallery

path, log_path, round_no, k, dim, fingerprint = sys.argv[1:7]
k, dim = int(k), int(dim)

def embeddings_for(name):
    return np.random.default_rng(zlib.crc32(name.encode())).standard_normal((k, dim))

with open(log_path, "a") as log, Gallery.open(path, model_fingerprint=fingerprint, embedding_size=dim) as gallery:
    log.write("ready\n"); log.flush()
    i = 0
    while True:
        name = f"r{round_no}-p{i}"
        gallery.enroll(name, embeddings_for(name))
        log.write(f"committed {name}\n"); log.flush()
        if i % 3 == 2:
            earlier = f"r{round_no}-p{i - 2}"
            gallery.enroll(earlier, embeddings_for(earlier), replace=True)
        i += 1
"""


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(RUNTIME_DIR), env.get("PYTHONPATH")) if p)
    return env


def _expected_templates(name: str) -> np.ndarray:
    raw = np.random.default_rng(zlib.crc32(name.encode())).standard_normal((K_TEMPLATES, DIM))
    return _unit(raw)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_enroll_loses_nothing_committed(tmp_path: Path):
    path = tmp_path / "crash.db"
    rng = np.random.default_rng(20240601)
    env = _child_env()
    committed: set[str] = set()
    kills_after_ready = 0
    for round_no in range(CRASH_ROUNDS):
        log_path = tmp_path / f"round{round_no}.log"
        log_path.touch()
        child = subprocess.Popen(
            [sys.executable, "-c", _CRASH_CHILD]
            + [str(path), str(log_path), str(round_no), str(K_TEMPLATES), str(DIM), FINGERPRINT],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            # Most rounds kill mid-enroll; every fifth kills at a random point of start-up,
            # which on round 0 can land while the gallery file is being created.
            if round_no % 5 != 0:
                deadline = time.monotonic() + 30
                while "ready\n" not in log_path.read_text():
                    if child.poll() is not None:
                        pytest.fail(f"crash child exited early (rc={child.returncode}): {child.stderr.read().decode()}")
                    if time.monotonic() > deadline:
                        pytest.fail("crash child did not start within 30 s")
                    time.sleep(0.005)
                kills_after_ready += 1
                time.sleep(float(rng.uniform(0.0, 0.15)))
            else:
                time.sleep(float(rng.uniform(0.0, 0.4)))
            if child.poll() is not None:
                stderr = child.stderr.read().decode()
                pytest.fail(f"crash child exited before the kill (rc={child.returncode}): {stderr}")
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stderr.close()

        lines = log_path.read_text().splitlines(keepends=True)
        committed |= {line.split()[1] for line in lines if line.startswith("committed ") and line.endswith("\n")}
        if not path.exists():
            assert not committed, "names were reported committed but the gallery file is gone"
            continue

        checker = sqlite3.connect(path)
        try:
            assert checker.execute("PRAGMA quick_check").fetchall() == [("ok",)], f"round {round_no}"
        finally:
            checker.close()
        with _open(path) as gallery:
            counts = {person.name: person.templates for person in gallery.people()}
            missing = committed - counts.keys()
            assert not missing, f"round {round_no}: committed people lost after SIGKILL: {sorted(missing)[:5]}"
            partial = {name: count for name, count in counts.items() if count != K_TEMPLATES}
            assert not partial, f"round {round_no}: half-enrolled people after SIGKILL: {partial}"
            matrix, labels = gallery.templates()
            by_name: dict[str, list[int]] = {}
            for row, label in enumerate(labels):
                by_name.setdefault(label, []).append(row)
            for name, rows in by_name.items():
                np.testing.assert_allclose(matrix[rows], _expected_templates(name), atol=1e-6, err_msg=name)
    assert kills_after_ready >= CRASH_ROUNDS // 2
    print(f"crash test: {len(committed)} people committed over {CRASH_ROUNDS} kills")
    assert len(committed) >= CRASH_ROUNDS  # the kills really landed among enrolls, not only at start-up
