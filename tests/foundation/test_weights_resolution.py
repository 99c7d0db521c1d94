"""Weights resolved once before a grid: file, digest, or a reason that names the parameter to set."""

from labkit.core.grid import file_digest
from labkit.models.weights import resolve_weights


def test_random_weights_need_nothing():
    resolved = resolve_weights("encoder_weights", "random", "resnet18")
    assert resolved.ok and resolved.digest == "random" and resolved.file is None


def test_a_file_is_read_by_digest_and_a_missing_one_names_the_parameter(tmp_path):
    file = tmp_path / "enc.safetensors"
    file.write_bytes(b"not really weights, only bytes to digest")
    resolved = resolve_weights("encoder_weights", str(file), "resnet18")
    assert resolved.ok and resolved.digest == file_digest(file) and resolved.file == str(file)
    missing = resolve_weights("encoder_weights", str(tmp_path / "gone.pth"), "resnet18")
    assert not missing.ok and "parameter 'encoder_weights'" in missing.reason


def test_pretrained_weights_absent_offline_give_a_reason_naming_the_parameter(monkeypatch, tmp_path):
    # conftest runs offline with no LABKIT_WEIGHTS_DIR: the hub cannot be asked, nothing is substituted
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    resolved = resolve_weights("dinov2_weights", "pretrained", "dinov2_vits14")
    assert not resolved.ok
    assert "Set parameter 'dinov2_weights'" in resolved.reason
    assert "LABKIT_WEIGHTS_DIR" in resolved.reason and "never substituted" in resolved.reason
    assert "weights_path=" not in resolved.reason


def test_a_named_checkpoint_not_yet_produced_names_its_study(monkeypatch, tmp_path):
    from labkit.models.registry import declared_checkpoints

    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path))
    name, info = next(iter(declared_checkpoints().items()))
    resolved = resolve_weights("encoder_weights", f"labkit:{name}", "resnet18")
    assert not resolved.ok
    assert f"labkit reproduce {info['study']}" in resolved.reason and "parameter 'encoder_weights'" in resolved.reason
