"""One configuration model: each command's options are one dataclass, read from TOML or derived flags.

The library calls are replaced by fakes that record the options they receive, so these tests
check what the command line and TOML files turn into without training or converting anything.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any

import pytest
import typer


@pytest.fixture
def received(monkeypatch):
    """What the library functions were called with, per command (the calls return fakes)."""
    import edgeface._report
    import edgeface._train
    import edgeface.adaptation
    import edgeface.report  # imported before the patches, so its names stay the real functions
    import edgeface.training
    import edgeface_converters

    calls: dict[str, Any] = {}

    def fake_convert(model, options=None, progress=None, **_):
        calls["convert"] = options
        return types.SimpleNamespace(to_json=lambda: "{}", by_status=lambda status: [])

    def fake_report(models, options=None, progress=None, **_):
        calls["report"] = options
        return types.SimpleNamespace(recommendation={"text": "none"}, notes=[])

    def fake_train(config, verbose=0):
        calls["train"] = config
        return types.SimpleNamespace(chief=False, model_path=Path("m"))

    def fake_adapt(model, data, out, config=None, **_):
        calls["adapt"] = config
        return types.SimpleNamespace(card={"data": {}, "thresholds": {"0.001": 0.5}}, model_path=Path("m"),
                                     card_path=Path("c"))

    monkeypatch.setattr(edgeface_converters, "convert", fake_convert, raising=False)
    monkeypatch.setattr(edgeface._report, "build_report", fake_report)
    monkeypatch.setattr(edgeface._train, "train", fake_train)
    monkeypatch.setattr(edgeface.adaptation, "adapt", fake_adapt)
    return calls


def test_a_toml_file_gives_the_same_options_as_the_equivalent_flags(edgeface, received, tmp_path):
    from edgeface_converters import ConvertOptions

    from edgeface.adaptation import AdaptConfig
    from edgeface.report import ReportOptions

    model = tmp_path / "model.keras"
    cases = {
        "convert": ('[convert]\nvariants = "int8,pruned-int8"\nsparsity = 0.3\nprune_block = 2\nio = "uint8"\n'
                    'calibration = "crops"\nbias_correction = false\nkeep_tensor_names = true\n'
                    'layer_sparsity = ["fc=0.9", "conv=0.2"]\n',
                    ["--variants", "int8,pruned-int8", "--sparsity", "0.3", "--prune-block", "2", "--io", "uint8",
                     "--calibration", "crops", "--no-bias-correction", "--keep-tensor-names",
                     "--layer-sparsity", "fc=0.9", "--layer-sparsity", "conv=0.2"]),
        "report": ('[report]\ndataset = "faces"\nn_pairs = 50\nfolds = "1-3"\nlatency_runs = 0\n'
                   'allow_overlap = true\nno_face = "center"\n',
                   ["--dataset", "faces", "--n-pairs", "50", "--folds", "1-3", "--latency-runs", "0",
                    "--allow-overlap", "--no-face", "center"]),
        "adapt": ('[adapt]\nsteps = 7\nlr = 0.01\nunfreeze = "all"\naugment = false\nseed = 4\n',
                  ["--steps", "7", "--lr", "0.01", "--unfreeze", "all", "--no-augment", "--seed", "4"]),
    }
    extra = {"convert": [model, "--json"], "report": [model, "--no-progress", "-o", tmp_path / "r"],
             "adapt": [model, "--data", tmp_path, "--out", tmp_path / "a"]}
    for command, (text, flags) in cases.items():
        if command == "adapt":  # TOML has no None: the file says augment = false, the dataclass holds None
            text = text.replace("augment = false\n", "")
        config = tmp_path / f"{command}.toml"
        config.write_text(text)
        code, _, err = edgeface(command, *extra[command], "--config", config)
        assert code == 0, err
        from_file = received.pop(command)
        code, _, err = edgeface(command, *extra[command], *flags)
        assert code == 0, err
        from_flags = received.pop(command)
        if command == "adapt":
            from_file = dataclasses.replace(from_file, augment=None)
        assert from_file == from_flags, command
    convert_options = ConvertOptions.from_toml(tmp_path / "convert.toml")
    assert (convert_options.sparsity, convert_options.io, convert_options.bias_correction) == (0.3, "uint8", False)
    assert isinstance(ReportOptions.from_toml(tmp_path / "report.toml").n_pairs, int)
    assert AdaptConfig.from_toml(tmp_path / "adapt.toml").unfreeze == "all"


def test_a_train_toml_file_gives_the_same_config_as_the_equivalent_flags(edgeface, received, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('[train]\nbackbone = "tiny"\ndataset = "lfw"\ndata = "faces"\ninput_size = [64, 48]\n'
                      'align = false\nteacher_options = {box = "blazeface", workers = 2}\nepochs = 5\n')
    flags = ["--backbone", "tiny", "--lfw", "--data", "faces", "--input-size", "64x48", "--no-align",
             "--teacher-option", "box=blazeface", "--teacher-option", "workers=2", "--epochs", "5"]
    built = []
    for form in ([config], ["--config", config], flags):  # the file as the argument (as before), --config, flags
        code, _, err = edgeface("train", *form)
        assert code == 0, err
        built.append(received.pop("train"))
    from_argument, from_option, from_flags = built
    assert from_argument.to_dict() == from_option.to_dict() == from_flags.to_dict()
    assert from_flags.input_size == (64, 48) and from_flags.teacher_options == {"box": "blazeface", "workers": 2}


def test_flags_override_the_file_and_flags_left_out_do_not(edgeface, received, tmp_path):
    config = tmp_path / "convert.toml"
    config.write_text('sparsity = 0.3\nclusters = 8\n')
    code, _, err = edgeface("convert", tmp_path / "m.keras", "--config", config, "--sparsity", "0.7", "--json")
    assert code == 0, err
    options = received["convert"]
    assert (options.sparsity, options.clusters, options.target) == (0.7, 8, "tflite-runtime-2.14")
    # The same holds for training's recipes: a flag wins over the recipe, options left out take its values.
    code, _, err = edgeface("train", "--recipe", "lfw-mobilenet-v1-025", "--no-align", "--data", "x")
    assert code == 0, err
    assert (received["train"].align, received["train"].backbone) == (False, "mobilenet_v1_025")


def test_an_unknown_toml_key_names_the_closest_option(edgeface, received, tmp_path):
    from edgeface_converters import ConvertOptions

    from edgeface.report import ReportOptions

    config = tmp_path / "c.toml"
    config.write_text("sparsty = 0.3\n")
    with pytest.raises(ValueError, match="unknown convert option 'sparsty'; did you mean 'sparsity'"):
        ConvertOptions.from_toml(config)
    code, out, err = edgeface("convert", tmp_path / "m.keras", "--config", config)
    assert code == 2 and "did you mean 'sparsity'" in err and err.count("\n") == 1 and "convert" not in received
    config.write_text("[report]\nlatency = 3\n")
    with pytest.raises(ValueError, match="unknown report option 'latency'; did you mean 'latency_runs'"):
        ReportOptions.from_toml(config)


def test_a_wrong_type_says_what_was_received_and_what_the_option_takes(tmp_path):
    from edgeface_converters import ConvertOptions

    from edgeface.adaptation import AdaptConfig
    from edgeface.training import TrainConfig

    config = tmp_path / "c.toml"
    for cls, text, message in [
        (ConvertOptions, 'sparsity = "half"', "convert option 'sparsity' takes a number, got 'half' (str)"),
        (ConvertOptions, "bias_correction = 1", "convert option 'bias_correction' takes true or false, got 1 (int)"),
        (ConvertOptions, "fars = [0.001, \"x\"]", "convert option 'fars' takes a list"),
        (TrainConfig, "epochs = 2.5", "training option 'epochs' takes a whole number, got 2.5 (float)"),
        (AdaptConfig, "steps = \"many\"", "adaptation option 'steps' takes a whole number, got 'many' (str)"),
        (ConvertOptions, 'io = "int4"', "io must be one of float32, int8, uint8, got 'int4'"),
    ]:
        config.write_text(text + "\n")
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            cls.from_toml(config)


def test_a_new_field_is_a_new_flag_without_other_edits(tmp_path):
    from typer.testing import CliRunner

    from edgeface._cli_support import options_command
    from edgeface._options import OptionsLoading, option

    @dataclasses.dataclass
    class Options(OptionsLoading):
        size: int = option(3, help="How many.")
        name: str = option("x", flags=("--name", "-n"), help="What it is called.")
        loud: bool = option(False, flags=("--loud/--soft",), help="Shout.")
        hidden: float = 0.5  # no help: a TOML/library option only

    seen: list[Options] = []

    @options_command(Options, what="example")
    def command(options: Options = Options(), verbose: bool = False) -> None:
        seen.append(options)

    app = typer.Typer()
    app.command()(command)
    runner = CliRunner()
    shown = runner.invoke(app, ["--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert shown.exit_code == 0
    for text in ("--size", "How many.", "--name", "-n", "--loud", "--soft", "--config", "--verbose"):
        assert text in shown.output
    assert "--hidden" not in shown.output
    assert runner.invoke(app, ["--size", "5", "-n", "y", "--loud"]).exit_code == 0
    assert seen[-1] == Options(size=5, name="y", loud=True)
    config = tmp_path / "example.toml"
    config.write_text("size = 9\nhidden = 0.25\n")
    assert runner.invoke(app, ["--config", str(config), "-n", "z"]).exit_code == 0
    assert seen[-1] == Options(size=9, name="z", hidden=0.25)


def test_the_keyword_call_forms_set_the_same_options(tmp_path):
    from edgeface_converters import ConvertOptions, convert

    from edgeface._options import merged
    from edgeface.report import ReportOptions, build_report

    assert (merged(ConvertOptions, None, "convert", sparsity=0.3, out="o")
            == merged(ConvertOptions, ConvertOptions(out="o"), "convert", sparsity=0.3)
            == ConvertOptions(out="o", sparsity=0.3))
    with pytest.raises(TypeError, match="did you mean 'sparsity'"):
        convert(tmp_path / "missing.keras", sparsty=0.3)  # refused before the model is opened
    with pytest.raises(TypeError, match="did you mean 'tolerance'"):
        build_report(tmp_path, toleranse=1.0)
    with pytest.raises(ValueError, match="tolerance is in accuracy points"):
        build_report(tmp_path, options=ReportOptions(tolerance=200.0), out_dir=tmp_path / "r")
