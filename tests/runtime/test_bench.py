import json

import pytest

from edgeface_runtime._bench import format_bench, run_bench


@pytest.mark.lfw
def test_bench_reports_every_stage_for_jpegs_and_frames(lfw_dir, detector_models_dir, fixtures_dir):
    images = lfw_dir / "lfw-deepfunneled" / "George_W_Bush"
    result = run_bench(fixtures_dir / "tiny_float32.tflite", images,
                       detector_path=detector_models_dir / "face_detection_short_range.tflite",
                       count=6, gallery_sizes=[100], warmup=2, detector_sizes=(None, 96))
    assert {"1_thread", "1_thread_detector_96"} <= set(result["runs"])
    for run in (result["runs"]["1_thread"], result["runs"]["1_thread_detector_96"]):
        for kind in ("jpeg", "frame_640x480"):
            assert set(run[kind]["stages"]) == {"decode", "detect", "align", "embed", "match", "total"}
            assert run[kind]["stages"]["total"]["n"] + run[kind]["no_face"] == 6
            assert run[kind]["cpu"]["n"] == run[kind]["stages"]["total"]["n"] and run[kind]["cpu"]["median_ms"] > 0
    assert result["identify"]["100"]["median_ms"] > 0 and result["peak_rss_mb"] > 0
    text = format_bench(result)
    assert "identify vs 100 people" in text and "| 1 thread detector 96 | jpeg |" in text


def test_bench_refuses_a_folder_without_images(tmp_path, fixtures_dir, edgeface):
    code, _, err = edgeface("bench", "-m", fixtures_dir / "tiny_float32.tflite", "--images", tmp_path)
    assert code == 2 and err.startswith("error:") and "JPEG images" in err


def test_bench_cli_parses_detector_sizes(tmp_path, fixtures_dir, edgeface):
    code, _, err = edgeface("bench", "-m", fixtures_dir / "tiny_float32.tflite", "--images", tmp_path,
                            "--detector-sizes", "native,ninety")
    assert code == 2 and "'native,96'" in err
