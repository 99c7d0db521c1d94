from labkit.cli import main


def test_list_shows_studies_presets_and_parameters(capsys, monkeypatch, tmp_path):
    (tmp_path / "toy.yaml").write_text(
        "name: toy\ntitle: A toy\nnotebook: 01_toy.ipynb\nheadline: score\nparams:\n"
        "  n_epochs: {type: int, min: 1, help: training epochs, presets: {smoke: 1, default: 5, paper: 50}}\n"
        "  arch: {type: str, choices: [a, b], value: a, help: which network}\n"
    )
    monkeypatch.setenv("LABKIT_SPECS", str(tmp_path))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy  [01_toy.ipynb]" in out and "smoke (CI" in out
    assert "n_epochs (int): smoke=1, default=5, paper=50 (>= 1)" in out and "training epochs" in out
    assert "arch (str): a (one of a/b)" in out


def test_errors_exit_2_with_a_message(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_SPECS", str(tmp_path))
    assert main(["list", "nope"]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err
    assert main(["reproduce", "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_p_preset_means_the_preset_and_split_names_stay_text():
    import argparse

    from labkit.cli import _preset_from_params
    from labkit.core.params import load_spec

    args = argparse.Namespace(preset="default", param=[("preset", "paper"), ("seeds", "[0]")])
    _preset_from_params(args)
    assert args.preset == "paper" and args.param == [("seeds", "[0]")]
    splits = load_spec("farcluss").params["splits"]
    assert splits.parse_cli("[1_16, 1_8, 1_4, 1_2]") == ["1_16", "1_8", "1_4", "1_2"]
    assert splits.parse_cli("1_32") == ["1_32"]
