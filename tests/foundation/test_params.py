import textwrap

import pytest

import labkit
from labkit.core.errors import ParameterError
from labkit.core.params import list_specs, load_spec, notebook_parameter_names, parse_spec

SPEC = """
name: toy
title: A toy study
notebook: 99_toy.ipynb
headline: score
params:
  seeds:
    type: list[int]
    help: seeds
    presets: {smoke: [0], default: [0, 1, 2], paper: [0, 1, 2, 3, 4]}
  n_epochs: {type: int, min: 1, max: 500, help: epochs, presets: {smoke: 1, default: 10, paper: 100}}
  lr: {type: float, min: 0, value: 1.0e-3, help: learning rate}
  backbone: {type: str, choices: [resnet18, resnet50], value: resnet18, help: encoder}
  weights_path: {type: str, nullable: true, value: null, help: optional file}
  use_lora: {type: bool, value: false, help: LoRA}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(SPEC)
    return parse_spec(path)


def test_presets_resolve_and_overrides_apply_on_top(spec):
    cfg = spec.resolve("smoke")
    assert (cfg.n_epochs, cfg.seeds, cfg.lr, cfg.backbone) == (1, [0], 1e-3, "resnet18")
    cfg = spec.resolve("default", {"n_epochs": 3, "lr": None, "seeds": (5, 6)})
    assert cfg.n_epochs == 3 and cfg.lr == 1e-3 and cfg.seeds == [5, 6]
    assert cfg.to_dict()["preset"] == "default"
    with pytest.raises(AttributeError):
        cfg.n_epochs = 4


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("n_epochs", "ten", "parameter 'n_epochs'.*integer"),
        ("n_epochs", 0, "parameter 'n_epochs'.*>= 1"),
        ("n_epochs", 2.5, "parameter 'n_epochs'.*integer"),
        ("lr", -1.0, "parameter 'lr'.*>= 0"),
        ("backbone", "vgg", "parameter 'backbone'.*one of"),
        ("use_lora", 1, "parameter 'use_lora'.*true or false"),
        ("seeds", 3, "parameter 'seeds'.*list"),
        ("seeds", [], "parameter 'seeds'.*empty"),
        ("nonexistent", 1, "no parameter 'nonexistent'"),
    ],
)
def test_bad_parameters_raise_errors_that_name_them(spec, name, value, message):
    with pytest.raises(ParameterError, match=message):
        spec.resolve("default", {name: value})


def test_unknown_preset_is_named(spec):
    with pytest.raises(ParameterError, match="unknown preset 'fast'"):
        spec.resolve("fast")


def test_cli_values_parse_as_yaml(spec):
    assert spec.params["seeds"].parse_cli("[1, 2]") == [1, 2]
    assert spec.params["lr"].parse_cli("1e-4") == 1e-4
    assert spec.params["use_lora"].parse_cli("true") is True
    assert spec.params["weights_path"].parse_cli("null") is None
    with pytest.raises(ParameterError, match="n_epochs"):
        spec.params["n_epochs"].parse_cli("abc")


def test_spec_file_errors_name_the_file_and_parameter(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent("""
        name: bad
        title: t
        notebook: n.ipynb
        headline: h
        params:
          k: {type: int, min: 1, presets: {smoke: 0, default: 1, paper: 1}}
    """)
    )
    with pytest.raises(ParameterError, match=r"bad.yaml preset 'smoke'.*>= 1"):
        parse_spec(bad)
    bad.write_text("name: bad\ntitle: t\nnotebook: n\nheadline: h\nparams:\n  k: {type: int, presets: {smoke: 1}}\n")
    with pytest.raises(ParameterError, match=r"no value for preset\(s\) \['default', 'paper'\]"):
        parse_spec(bad)


def test_configure_reads_a_notebook_namespace(tmp_path, monkeypatch, spec):
    monkeypatch.setenv("LABKIT_SPECS", str(spec.source.parent))
    namespace = {"preset": "smoke", "n_epochs": 7, "lr": None, "unrelated": object()}
    cfg = labkit.configure("toy", namespace["preset"], namespace)
    assert cfg.n_epochs == 7 and cfg.lr == 1e-3
    with pytest.raises(ParameterError, match="unknown study 'nope'"):
        labkit.configure("nope", "smoke", {})


def test_shipped_specs_are_valid():
    for spec in list_specs():
        for preset in ("smoke", "default", "paper"):
            spec.resolve(preset)
        assert load_spec(spec.name) is spec


def test_parameters_cell_names():
    assert notebook_parameter_names("preset = 'default'\nn: int = None  # epochs\nx = y = 1\n") == [
        "preset",
        "n",
        "x",
        "y",
    ]


def test_the_one_data_root_rule(tmp_path):
    from labkit.core.params import check_data_root

    layout = {"mvtec": "an MVTec AD category folder (train/good, test/<defect>, ground_truth/<defect>)"}
    assert check_data_root({"data_source": "simulated", "data_root": None}, layout) is None
    assert check_data_root({"data_source": "mvtec", "data_root": str(tmp_path)}, layout) == tmp_path
    with pytest.raises(
        ParameterError, match=r"'data_root' is not set but data_source is 'mvtec', which reads an MVTec"
    ):
        check_data_root({"data_source": "mvtec", "data_root": None}, layout)
    with pytest.raises(ParameterError, match=r"'data_root' is '.*nowhere', which is not an existing folder"):
        check_data_root({"data_source": "mvtec", "data_root": str(tmp_path / "nowhere")}, layout)
    with pytest.raises(
        ParameterError, match=r"data_source is 'simulated', which reads no folder: set data_source to 'mvtec'"
    ):
        check_data_root({"data_source": "simulated", "data_root": str(tmp_path)}, layout)


def test_a_simulator_parameter_is_listed_as_not_applying_on_real_data(tmp_path):
    from labkit.reports.summary import render_study_readme

    spec_text = SPEC + textwrap.indent(
        textwrap.dedent("""
        data_source: {type: str, choices: [simulated, folders], value: simulated, help: data}
        scene_size: {type: int, value: 64, help: simulated side, applies_when: {data_source: [simulated]}}
        """),
        "  ",
    )
    (tmp_path / "toy.yaml").write_text(spec_text)
    spec = parse_spec(tmp_path / "toy.yaml")
    assert spec.resolve("smoke").inapplicable == ()
    real = spec.resolve("smoke", {"data_source": "folders"})
    assert real.inapplicable == ("scene_size",) and "scene_size" not in real.applicable()
    assert real.scene_size == 64  # kept, only not shown as a setting
    html = real._repr_html_()
    assert "Not applying to this run's data: <code>scene_size</code>" in html and "<td><code>scene_size" not in html
    # the study README's settings leave it out and say so
    folder = tmp_path / "report"
    folder.mkdir()
    manifest = {"study": "toy", "title": "t", "preset": "smoke", "params": real.to_dict(), "status": "ok"}
    manifest["params_not_applying"] = list(real.inapplicable)
    (folder / "manifest.json").write_text(__import__("json").dumps(manifest))
    readme = render_study_readme(folder)
    assert (
        "| `scene_size` |" not in readme
        and "Not applying to this run's data (kept in the manifest): `scene_size`" in readme
    )
    # a condition on a parameter the spec lacks, or on a value it cannot take, names both
    (tmp_path / "toy.yaml").write_text(spec_text.replace("data_source: [simulated]", "source: [simulated]"))
    with pytest.raises(ParameterError, match="scene_size' applies_when names no parameter 'source'"):
        parse_spec(tmp_path / "toy.yaml")
    (tmp_path / "toy.yaml").write_text(spec_text.replace("data_source: [simulated]", "data_source: [simulate]"))
    with pytest.raises(ParameterError, match="must be one of"):
        parse_spec(tmp_path / "toy.yaml")


def batch_within_images(cfg):
    """A config check as a study would write one: two parameters (or the data they name) against each other."""
    if cfg.batch > cfg.images:
        raise ParameterError(f"parameter 'batch' is {cfg.batch}, larger than the {cfg.images} images; lower it")


def test_a_spec_config_check_refuses_bad_input_at_resolve_time(tmp_path):
    spec_text = SPEC.replace(
        "name: toy", "name: toy\nconfig_checks: [tests.foundation.test_params:batch_within_images]"
    )
    spec_text += textwrap.indent(
        textwrap.dedent("""
        images: {type: int, value: 8, help: images}
        batch: {type: int, value: 4, help: batch}
        """),
        "  ",
    )
    (tmp_path / "toy.yaml").write_text(spec_text)
    spec = parse_spec(tmp_path / "toy.yaml")
    assert spec.config_checks == ("tests.foundation.test_params:batch_within_images",)
    assert spec.resolve("smoke").batch == 4
    with pytest.raises(ParameterError, match="'batch' is 16, larger than the 8 images"):
        spec.resolve("smoke", {"batch": 16})
    # an entry that cannot be imported is named at resolve time, not silently skipped
    (tmp_path / "toy.yaml").write_text(spec_text.replace("batch_within_images", "no_such_check"))
    with pytest.raises(ParameterError, match="config_checks names 'tests.foundation.test_params:no_such_check'"):
        parse_spec(tmp_path / "toy.yaml").resolve("smoke")
    (tmp_path / "toy.yaml").write_text(spec_text.replace("[tests.foundation.test_params:batch_within_images]", "[7]"))
    with pytest.raises(ParameterError, match="config_checks must list 'module:function' entries"):
        parse_spec(tmp_path / "toy.yaml")
