
import pytest

from edgeface_runtime._bench import _best_of, format_bench, run_bench


@pytest.mark.lfw
def test_bench_reports_every_stage_for_jpegs_and_frames(lfw_dir, detector_models_dir, fixtures_dir):
    images = lfw_dir / "lfw-deepfunneled" / "George_W_Bush"
    result = run_bench(fixtures_dir / "tiny_float32.tflite", images,
                       detector_path=detector_models_dir / "face_detection_short_range.tflite",
                       count=6, gallery_sizes=[100], warmup=2, detector_sizes=(None, 96), repeat=2)
    assert {"1_thread", "1_thread_detector_96"} <= set(result["runs"])
    for run in (result["runs"]["1_thread"], result["runs"]["1_thread_detector_96"]):
        for kind in ("jpeg", "frame_640x480"):
            assert set(run[kind]["stages"]) == {"decode", "detect", "align", "embed", "match", "total"}
            assert run[kind]["stages"]["total"]["n"] + run[kind]["no_face"] == 6
            assert run[kind]["cpu"]["n"] == run[kind]["stages"]["total"]["n"] and run[kind]["cpu"]["median_ms"] > 0
            assert len(run[kind]["pass_totals_ms"]) == 2
            assert run[kind]["stages"]["total"]["median_ms"] == min(run[kind]["pass_totals_ms"])
    assert result["identify"]["100"]["median_ms"] > 0 and result["peak_rss_mb"] > 0
    text = format_bench(result)
    assert "identify vs 100 people" in text and "| 1 thread detector 96 | jpeg |" in text
    assert "fastest of 2 passes" in text and "1 thread detector 96, jpeg: " in text


def _pass(total_ms, with_faces=True):
    stages = {"total": {"median_ms": total_ms, "p90_ms": total_ms * 1.2, "n": 4}} if with_faces else {}
    return {"stages": stages, "no_face": 0 if with_faces else 4, "cpu": None}


def test_repeated_passes_keep_the_fastest_and_list_them_all():
    best = _best_of([_pass(4.1), _pass(2.9), _pass(3.5)])
    assert best["stages"]["total"]["median_ms"] == 2.9 and best["pass_totals_ms"] == [4.1, 2.9, 3.5]
    assert _best_of([_pass(0, with_faces=False), _pass(3.0)])["pass_totals_ms"] == [None, 3.0]
    assert _best_of([_pass(0, with_faces=False)])["no_face"] == 4


def test_bench_refuses_a_repeat_below_one(tmp_path, fixtures_dir, edgeface):
    code, _, err = edgeface("bench", "-m", fixtures_dir / "tiny_float32.tflite", "--images", tmp_path, "--repeat", "0")
    assert code == 2 and "repeat" in err


def test_bench_refuses_a_folder_without_images(tmp_path, fixtures_dir, edgeface):
    code, _, err = edgeface("bench", "-m", fixtures_dir / "tiny_float32.tflite", "--images", tmp_path)
    assert code == 2 and err.startswith("error:") and "JPEG images" in err


def test_bench_cli_parses_detector_sizes(tmp_path, fixtures_dir, edgeface):
    code, _, err = edgeface("bench", "-m", fixtures_dir / "tiny_float32.tflite", "--images", tmp_path,
                            "--detector-sizes", "native,ninety")
    assert code == 2 and "'native,96'" in err
