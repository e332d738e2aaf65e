"""The demo's device step with the default model bundled in edgeface-runtime, on real LFW people."""

from __future__ import annotations

import pytest


@pytest.mark.lfw
def test_the_bundled_model_accepts_enrolled_people_and_turns_strangers_away(lfw_dir, detector_models_dir, tmp_path):
    from edgeface._demo import DemoResult, _default_model_check, format_summary

    outcome = _default_model_check(detector_models_dir / "face_detection_short_range.tflite", lfw_dir, tmp_path, 5)
    assert outcome is not None and outcome["no_face"] == 0
    # Five folds 6-10 people enrolled from two photos each; three more photos of each, and three of five strangers.
    assert outcome["genuine_total"] == 15 and outcome["genuine_accepted"] >= 14
    assert outcome["stranger_total"] == 15 and outcome["stranger_accepted"] <= 1
    assert outcome["verify_same"]["same"] and not outcome["verify_different"]["same"]
    device = {**outcome, "variant": "int8", "default_model": outcome}
    text = format_summary(DemoResult(tmp_path, {}, [], device, {"device": 1.0}))
    assert "device check with the default model bundled with edgeface-runtime" in text
