from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training_helpers import make_dataset

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Logical devices must be configured before TensorFlow initialises them: a fresh process.
SCRIPT = """
import json, sys
from edgeface._keras import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from training_helpers import make_dataset, tiny_config
from edgeface.training import train, load_model
data = make_dataset(Path(sys.argv[1]) / "faces", identities=4, per_identity=6)
result = train(tiny_config(data, Path(sys.argv[1]) / "run", strategy=sys.argv[2], epochs=2, steps_per_epoch=2))
model, md = load_model(result.model_path)
print("RESULT", json.dumps({"devices": result.card["environment"]["devices"], "epochs": len(result.history),
                            "embedding": md.embedding_size,
                            "replicas": result.card["environment"]["strategy"]["replicas"]}))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "runtime"), str(REPO)]), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "mirrored", str(HERE)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [out_line for out_line in done.stdout.splitlines() if out_line.startswith("RESULT ")][-1]
    import json

    result = json.loads(line[len("RESULT "):])
    assert sum("CPU" in d for d in result["devices"]) == 2
    assert result["epochs"] == 2 and result["embedding"] == 16 and result["replicas"] == 2


# --------------------------------------------------------------------------- several workers on loopback

def _faces(run: Path) -> None:
    # 7 people of 5: 2 go to validation, 25 training images; an odd count, so each pass drops one.
    make_dataset(run / "faces", identities=7, per_identity=5)


@pytest.mark.slow
def test_two_loopback_workers_train_and_embed_disjoint_shards_and_only_the_chief_writes(tmp_path):
    from multiworker_helpers import seen, start_workers, wait_all

    _faces(tmp_path)
    (tmp_path / "teacher.bin").write_bytes(b"")
    # Distilling from a teacher that records what it embeds, with the identity loss kept on.
    options = {"epochs": 2, "steps_per_epoch": 3, "batch_size": 8, "recording_teacher": True,
               "teacher": f"recording:{tmp_path / 'teacher.bin'}", "teacher_cache": str(tmp_path / "cache"),
               "label_weight": 1.0}
    workers = start_workers(tmp_path, 2, options)
    wait_all(workers, timeout=300)
    for w in workers:
        assert w.process.returncode == 0, w.output()[-3000:]
    results = [w.result() for w in workers]
    assert [r["chief"] for r in results] == [True, False]
    assert all(r["epochs"] == 2 and r["strategy"] == {"name": "multiworker", "replicas": 2, "workers": 2}
               for r in results)

    # Sharding: each pass of the 25 images is cut to 24 and dealt out, 12 to each worker, none to both.
    n = results[0]["train_images"]
    assert n == 25
    per_pass = n // 2
    first, second = seen(tmp_path, 0), seen(tmp_path, 1)
    assert len(first) >= 2 * per_pass and len(second) >= 2 * per_pass  # 3 steps x 2 epochs x 4 images each
    for p in range(2):
        mine, theirs = (set(s[p * per_pass:(p + 1) * per_pass]) for s in (first, second))
        assert len(mine) == len(theirs) == per_pass  # no image twice in a worker's pass
        assert not mine & theirs                     # nor on both workers
        assert len(mine | theirs) == 2 * per_pass and mine | theirs <= set(range(n))

    # The teacher: each worker embedded its own shard (by path hash), once; both then read the whole set.
    from edgeface.teachers import shard_of

    embedded = [(tmp_path / f"teacher-{i}.txt").read_text().split() for i in range(2)]
    assert all(len(e) == len(set(e)) for e in embedded)
    assert all(shard_of(p, 2) == i for i, e in enumerate(embedded) for p in e)
    assert len(embedded[0]) + len(embedded[1]) == n
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "cache").iterdir()) == \
        ["part-0-of-2.npz", "part-1-of-2.npz"]

    # Only the chief wrote; the other worker's scratch folder is gone.
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "model.keras", "training_card.json"]
    assert results[1]["model_path"] == str(out / "model.keras")
    assert list((tmp_path / "tmp-1").iterdir()) == []

    # The result is an ordinary edgeface model.
    from edgeface.training import load_model

    model, metadata = load_model(out / "model.keras")
    assert metadata.embedding_size == 16 and metadata.preprocess.input_size == (32, 32)
    embedding = np.asarray(model(np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)))
    assert embedding.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["worker-dies", "chief-dies"])
def test_a_worker_dying_mid_training_stops_the_others_with_a_clear_error_and_writes_no_model(tmp_path, victim):
    import json

    from multiworker_helpers import start_workers, wait_all

    _faces(tmp_path)
    options = {"epochs": 6, "steps_per_epoch": 3, "batch_size": 8}
    workers = start_workers(tmp_path, 2, options, per_worker={victim: {"die_after_epoch": 2}})
    ended = wait_all(workers, timeout=300)
    dead, survivor = workers[victim], workers[1 - victim]
    assert dead.process.returncode == -9, dead.output()[-3000:]
    died = float((tmp_path / f"died-{victim}").read_text())
    log = survivor.output()
    assert survivor.process.returncode != 0, log[-3000:]
    assert "another worker died or became unreachable" in log and "--resume" in log, log[-3000:]
    # Seen on loopback: about 1 s when the chief dies (its connection resets), about 8 s when the
    # other worker dies (the chief's coordination service misses its heartbeats).
    assert ended - died < 60, f"the survivor took {ended - died:.0f} s to notice"
    out = tmp_path / "out"
    assert not list(out.glob("*.keras")) and not list(out.glob(".*"))  # no model, not even half of one
    assert json.loads((out / "checkpoints" / "state.json").read_text())["epoch"] == 2
    if victim == 0:  # the surviving non-chief removed its scratch folder on the way out
        assert list((tmp_path / "tmp-1").iterdir()) == []

    if victim == 0:
        return
    workers = start_workers(tmp_path, 2, {**options, "resume": True})
    wait_all(workers, timeout=300)
    for w in workers:
        assert w.process.returncode == 0, w.output()[-3000:]
    assert workers[0].result()["epochs"] == 6  # the two epochs before the death and four more
    assert (out / "model.keras").is_file() and (out / "training_card.json").is_file()
    card = json.loads((out / "training_card.json").read_text())
    assert [row["epoch"] for row in card["history"]] == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------- the shard functions themselves

def test_index_stream_deals_each_pass_to_the_workers_without_overlap():
    from edgeface._data import index_stream

    labels = np.arange(11) % 3
    for balanced in (False, True):
        streams = [index_stream(labels, seed=4, balanced=balanced, shard=(i, 3)) for i in range(3)]
        whole = index_stream(labels, seed=4, balanced=balanced)
        for _ in range(4):  # passes: 11 images cut to 9, 3 to each worker
            parts = [[next(s) for _ in range(3)] for s in streams]
            order = [next(whole) for _ in range(11)]
            assert [i for trio in zip(*parts) for i in trio] == order[:9]  # the same pass, dealt out
            if not balanced:
                assert len({i for part in parts for i in part}) == 9


def test_bad_shards_and_too_few_images_for_the_workers_are_value_errors():
    from edgeface._data import index_stream

    for shard in [(2, 2), (0, 0), (-1, 2), "ab"]:
        with pytest.raises(ValueError, match="shard"):
            next(index_stream(np.zeros(4), seed=0, shard=shard))
    with pytest.raises(ValueError, match="3 workers"):
        next(index_stream(np.zeros(2), seed=0, shard=(0, 3)))


def test_shard_of_is_a_stable_hash_of_the_relative_path():
    from edgeface.teachers import shard_of

    # Fixed values: the same on every machine, run and Python (no per-process hash salt), and the
    # same path however it is spelled.
    assert [shard_of(p, 4) for p in ("alice/1.jpg", "bob/2.png", "carol/3.jpg", "dave/4.jpg")] == [3, 3, 1, 2]
    assert shard_of("./alice/1.jpg", 4) == 3
    counts = np.bincount([shard_of(f"p{i}/{i}.jpg", 4) for i in range(2000)], minlength=4)
    assert counts.min() > 400  # spread about evenly (500 each)


def test_teacher_shards_embed_disjoint_parts_that_the_cache_reads_as_one(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from edgeface.teachers import EnsembleTeacher, Teacher, merge_teacher_cache, shard_of, teacher_embeddings

    def _fixed(vectors, paths, tag="a"):
        """A teacher returning given rows by path, counting the rows asked of it."""
        class Fixed(Teacher):
            kind = "fixed"

            def __init__(self):
                self.rows, self.calls = dict(zip(paths, np.asarray(vectors, np.float32))), 0
                super().__init__(None, {"tag": tag}, int(np.shape(vectors)[1]))

            def embed(self, root, wanted, progress=None):
                self.calls += len(wanted)
                return np.stack([self.rows[p] for p in wanted])

        return Fixed()

    data = make_dataset(tmp_path / "faces", identities=5, per_identity=4, size=16)
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))
    vectors = np.random.default_rng(3).normal(size=(len(paths), 4))
    cache = tmp_path / "cache"
    teachers = [_fixed(vectors, paths) for _ in range(3)]  # three processes' own teacher objects
    with ThreadPoolExecutor(3) as pool:  # at the same time, into one cache folder
        found = list(pool.map(lambda k: teacher_embeddings(teachers[k], str(data), paths, cache_dir=cache,
                                                           shard=(k, 3)), range(3)))
    for k, f in enumerate(found):
        assert f.paths == [p for p in paths if shard_of(p, 3) == k] and f.computed == len(f.paths)
        assert teachers[k].calls == len(f.paths)  # each embedded its own shard, nothing more
    assert sum(len(f.paths) for f in found) == len(paths)
    assert len(list(cache.glob("*.part-*-of-3.npz"))) == 3 and not list(cache.glob("fixed-????????????????????.npz"))

    reader = _fixed(vectors, paths)
    whole = teacher_embeddings(reader, str(data), paths, cache_dir=cache)
    assert reader.calls == 0 and whole.reused == len(paths)
    np.testing.assert_allclose(whole.vectors, vectors, atol=1e-6)

    merged = merge_teacher_cache(reader, cache)
    assert merged is not None and merged.is_file() and not list(cache.glob("*.part-*"))
    again = _fixed(vectors, paths)
    assert teacher_embeddings(again, str(data), paths, cache_dir=cache).reused == len(paths) and again.calls == 0

    with pytest.raises(ValueError, match="ensemble"):
        teacher_embeddings(EnsembleTeacher([_fixed(vectors, paths), _fixed(vectors, paths, tag="b")]), str(data),
                           paths, cache_dir=cache, shard=(0, 2))
    with pytest.raises(ValueError, match="shard"):
        teacher_embeddings(reader, str(data), paths, cache_dir=cache, shard=(3, 3))


@pytest.mark.slow
def test_workers_with_different_data_folders_refuse_to_train(tmp_path):
    from multiworker_helpers import start_workers, wait_all

    _faces(tmp_path)
    other = make_dataset(tmp_path / "other", identities=7, per_identity=5)
    (other / "person_00" / "000.png").unlink()  # one file missing on the second machine
    workers = start_workers(tmp_path, 2, {"epochs": 2, "steps_per_epoch": 3, "batch_size": 8},
                            per_worker={1: {"data": str(other)}})
    wait_all(workers, timeout=300)
    for w in workers:
        assert w.process.returncode != 0 and "loaded different training data" in w.output(), w.output()[-3000:]
    assert not (tmp_path / "out" / "model.keras").exists()


def test_the_train_command_reports_a_lost_worker_in_one_line_with_its_own_exit_code(edgeface, tmp_path, monkeypatch):
    import edgeface._train as train_module
    from edgeface.training import TrainResult, WorkerLostError

    def lost(config, **kwargs):
        raise WorkerLostError("multi-worker training stopped on worker 0: another worker died or became "
                              "unreachable (...). Nothing was written; start every worker again with --resume")

    monkeypatch.setattr(train_module, "train", lost)
    code, _, err = edgeface("train", "--data", tmp_path, "--strategy", "multiworker", "--out", tmp_path / "r")
    assert code == 10 and err.startswith("error: multi-worker training stopped") and "Traceback" not in err
    assert err.count("\n") == 1

    def not_chief(config, **kwargs):
        return TrainResult(Path(config.out), Path(config.out) / "model.keras", Path(config.out) / "training_card.json",
                           {}, [], {}, chief=False)

    monkeypatch.setattr(train_module, "train", not_chief)
    code, out, _ = edgeface("train", "--data", tmp_path, "--strategy", "multiworker", "--out", tmp_path / "r")
    assert code == 0 and "the chief writes the model" in out and "training card" not in out
