"""Issue 17, parameters: non-finite values (4), explicit null (5), unknown injected names (6), list elements,
str parameters given a list, seeds (7), weights paths that do not exist (10)."""

import json
import math

import nbformat
import pytest

import labkit
from labkit.core.errors import ParameterError
from labkit.core.params import injected_parameters, parse_spec

SPEC = """
name: toy
title: A toy study
notebook: 99_toy.ipynb
headline: score
params:
  seeds: {type: "list[int]", help: seeds, value: [0, 1, 2]}
  iterations: {type: int, min: 1, help: training steps, value: 10}
  lr: {type: float, min: 0, value: 1.0e-3, help: learning rate}
  threshold: {type: float, min: 0, max: 1, value: 0.5, help: decision threshold}
  fractions: {type: "list[float]", min: 0, max: 1, help: label fractions, value: [0.25, 1.0]}
  noise_models: {type: "list[str]", choices: [none, flip, blur], help: noise models, value: [none, flip]}
  encoder: {type: str, value: resnet18, help: timm encoder name}
  threads:
    type: int
    min: 1
    nullable: true
    help: torch CPU threads (null is torch's default)
    presets: {smoke: 1, default: 1, paper: null}
  img_size: {type: int, min: 14, nullable: true, help: input side (null is the slice size), value: 168}
  ssl_max_seconds: {type: float, min: 1, nullable: true, help: time cap (null is no cap), value: 150}
  encoder_weights: {type: str, help: "weights: pretrained, random, a file or labkit:<name>", value: pretrained}
"""


@pytest.fixture
def spec(tmp_path, monkeypatch):
    (tmp_path / "toy.yaml").write_text(SPEC)
    monkeypatch.setenv("LABKIT_SPECS", str(tmp_path))
    return parse_spec(tmp_path / "toy.yaml")


# ---- 4: non-finite values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text",
    [
        ("threshold", ".nan"),
        ("lr", ".nan"),
        ("lr", ".inf"),
        ("lr", "-.inf"),
        ("lr", "1e400"),
        ("iterations", ".nan"),
        ("iterations", ".inf"),
        ("fractions", "[0.5, .nan]"),
        ("seeds", "[1, .nan]"),
    ],
)
def test_non_finite_values_are_rejected_naming_the_parameter(spec, name, text):
    with pytest.raises(ParameterError, match=rf"parameter '{name}'.*finite"):
        spec.params[name].parse_cli(text)


@pytest.mark.parametrize("value", [math.nan, math.inf, [0.5, math.nan]])
def test_non_finite_values_from_a_notebook_are_rejected(spec, value):
    name = "fractions" if isinstance(value, list) else "threshold"
    with pytest.raises(ParameterError, match=rf"parameter '{name}'.*finite"):
        labkit.configure("toy", "default", {name: value})


# ---- 7: list elements, str parameters, seeds ----------------------------------------------------


def test_every_list_element_gets_type_range_and_choices(spec):
    with pytest.raises(ParameterError, match=r"parameter 'fractions' item 1 \(2\).*<= 1"):
        spec.params["fractions"].parse_cli("[0.5, 2]")
    with pytest.raises(ParameterError, match=r"parameter 'noise_models' item 0 \('bogus'\).*one of"):
        spec.params["noise_models"].parse_cli("[bogus]")
    with pytest.raises(ParameterError, match=r"parameter 'seeds' item 0.*integer"):
        spec.params["seeds"].parse_cli("[one]")


def test_a_str_parameter_never_takes_a_list(spec):
    with pytest.raises(ParameterError, match=r"parameter 'encoder' takes one string, got the list '\[resnet10t\]'"):
        spec.params["encoder"].parse_cli("[resnet10t]")
    with pytest.raises(ParameterError, match="parameter 'encoder'"):
        spec.params["encoder"].parse_cli("{a: 1}")
    with pytest.raises(ParameterError, match="parameter 'encoder'.*string, got list"):
        labkit.configure("toy", "default", {"encoder": ["resnet10t"]})
    assert spec.params["encoder"].parse_cli("resnet10t") == "resnet10t"
    assert spec.params["encoder"].parse_cli("18") == "18"  # a number meant as text stays text


@pytest.mark.parametrize("text", ["[1e20]", "[-1]", f"[{2**32}]"])
def test_seeds_are_checked_up_front(spec, text):
    with pytest.raises(ParameterError, match=r"parameter 'seeds'.*seed must be an integer in \[0, 2\*\*32\)"):
        spec.params["seeds"].parse_cli(text)


def test_valid_seeds_and_big_integers(spec):
    assert spec.params["seeds"].parse_cli(f"[0, {2**32 - 1}]") == [0, 2**32 - 1]
    with pytest.raises(ParameterError, match=r"parameter 'iterations'.*below 2\*\*63"):
        spec.params["iterations"].parse_cli("1e30")


# ---- 5: explicit null ---------------------------------------------------------------------------


def test_none_keeps_the_preset_and_an_explicit_null_replaces_it(spec):
    assert spec.resolve("default", {"threads": None}).threads == 1
    cfg = spec.resolve("default", {"threads": None, "img_size": None}, nulls=["threads", "img_size"])
    assert cfg.threads is None and cfg.img_size is None and cfg.ssl_max_seconds == 150
    assert spec.resolve("default", nulls=["ssl_max_seconds"]).ssl_max_seconds is None
    # The string "null" is an explicit null (a notebook cell in JupyterLab, papermill -p NAME null).
    assert labkit.configure("toy", "default", {"threads": "null", "img_size": "NULL"}).to_dict() | {} == {
        **spec.resolve("default").to_dict(),
        "threads": None,
        "img_size": None,
    }
    assert labkit.configure("toy", "default", {"threads": None}).threads == 1
    with pytest.raises(ParameterError, match="parameter 'iterations'.*may not be None or null"):
        spec.resolve("default", nulls=["iterations"])
    with pytest.raises(ParameterError, match="parameter 'iterations'.*integer"):
        labkit.configure("toy", "default", {"iterations": "null"})


def _kernel_history(*cells):
    return {"In": ["", *cells]}


def test_configure_counts_injected_values_and_ignores_notebook_globals(spec):
    own = "preset = 'default'  # smoke | default | paper\nthreads = None  # torch threads\nimg_size = None  # side"
    injected = '# Parameters\npreset = "default"\nthreads = None\niterations = 3\n'
    namespace = {
        **_kernel_history(own, injected),
        "preset": "default",
        "threads": None,
        "img_size": None,
        "iterations": 3,
        "unrelated_global": 1,
    }
    assert injected_parameters(namespace) == ["preset", "threads", "iterations"]
    cfg = labkit.configure("toy", "default", namespace)
    assert cfg.threads is None and cfg.img_size == 168 and cfg.iterations == 3
    # Only the notebook's own cell ran (JupyterLab): None is "not set", unknown globals are fine.
    plain = {**_kernel_history(own), "threads": None, "unrelated_global": 1}
    assert injected_parameters(plain) == [] and labkit.configure("toy", "default", plain).threads == 1
    # A hand-written cell that merely starts with "# Parameters" but carries help comments is not papermill's.
    assert injected_parameters(_kernel_history("# Parameters\nthreads = None  # torch threads\n")) == []
    # papermill writes NaN as float('nan'): still recognised, and rejected.
    nan = {**_kernel_history("# Parameters\nthreshold = float('nan')\n"), "threshold": math.nan}
    with pytest.raises(ParameterError, match="parameter 'threshold'.*finite"):
        labkit.configure("toy", "default", nan)


def test_an_injected_name_the_spec_does_not_know_is_an_error_with_near_matches(spec):
    namespace = {**_kernel_history('# Parameters\npreset = "smoke"\nitertions = 3\n'), "itertions": 3}
    with pytest.raises(ParameterError, match=r"no parameter 'itertions': did you mean 'iterations'"):
        labkit.configure("toy", "smoke", namespace)
    paths = {**_kernel_history('# Parameters\nPAPERMILL_INPUT_PATH = "a.ipynb"\n'), "PAPERMILL_INPUT_PATH": "a"}
    assert labkit.configure("toy", "smoke", paths).iterations == 10  # papermill --inject-paths is fine


# ---- 10: weights paths --------------------------------------------------------------------------


def test_a_weights_parameter_naming_a_missing_file_fails_before_the_run(spec, tmp_path):
    with pytest.raises(ParameterError, match=r"parameter 'encoder_weights'.*typo.pth.*does not exist"):
        spec.resolve("default", {"encoder_weights": str(tmp_path / "typo.pth")})
    real = tmp_path / "w.safetensors"
    real.write_bytes(b"x")
    for value in (str(real), "pretrained", "random", "labkit:some-encoder"):
        assert spec.resolve("default", {"encoder_weights": value}).encoder_weights == value


# ---- 5 and 6 through papermill, as a user runs it by hand ---------------------------------------


def _tiny_notebook(path, out_json):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'preset = "default"  # preset\niterations = None  # steps\n'
        "threads = None  # torch threads\nimg_size = None  # side"
    )
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import json, labkit\nhelper = 1\ncfg = labkit.configure('toy', preset, globals())\n"
        f"open({str(out_json)!r}, 'w').write(json.dumps(dict(cfg)))"
    )
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_papermill_by_hand_explicit_null_and_unknown_names(spec, tmp_path):
    import papermill

    notebook, out = tmp_path / "tiny.ipynb", tmp_path / "cfg.json"
    _tiny_notebook(notebook, out)

    def run(**parameters):
        papermill.execute_notebook(
            str(notebook),
            str(tmp_path / "out.ipynb"),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(tmp_path),
        )
        return json.loads(out.read_text())

    # papermill -p threads None (or -y 'threads: null') and -p img_size null: explicit nulls.
    values = run(threads=None, img_size="null", iterations=4)
    assert values["threads"] is None and values["img_size"] is None and values["iterations"] == 4
    assert run()["threads"] == 1 and run()["img_size"] == 168  # nothing injected: the preset's values
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run(itertions=3)
    assert info.value.ename == "ParameterError" and "did you mean 'iterations'" in info.value.evalue


def test_a_seed_listed_twice_is_refused(spec):
    with pytest.raises(ParameterError, match=r"parameter 'seeds'.*seed\(s\) \[1\] more than once"):
        spec.params["seeds"].parse_cli("[0, 1, 1]")
