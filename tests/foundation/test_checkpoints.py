import json

import pytest
import torch
from torch import nn

from labkit.core.atomic import atomic_write_text, publish_dir, recover_dir
from labkit.core.checkpoints import load_checkpoint, load_state_into, save_checkpoint
from labkit.core.errors import CheckpointMismatchError, WeightsUnavailableError


def test_safetensors_roundtrip_with_sidecar(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = save_checkpoint(tmp_path / "m", model.state_dict(), {"epochs": 3, "data": "toy"})
    assert path.suffix == ".safetensors"
    assert json.loads((tmp_path / "m.json").read_text())["epochs"] == 3
    state, meta = load_checkpoint(tmp_path / "m.safetensors")
    other = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    load_state_into(other, state)
    assert torch.equal(other[0].weight, model[0].weight) and meta["data"] == "toy"


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    save_checkpoint(tmp_path / "m", nn.Linear(3, 4).state_dict())
    state, _ = load_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch.*weight: checkpoint \(4, 3\) vs model \(5, 3\)"):
        load_state_into(nn.Linear(3, 5), state, source="m")
    with pytest.raises(
        CheckpointMismatchError, match=r"missing key\(s\): 0.bias, 0.weight.*unexpected key\(s\): bias, weight"
    ):
        load_state_into(nn.Sequential(nn.Linear(3, 4)), state, source="m")


def test_missing_and_non_checkpoint_files_are_clear_errors(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointMismatchError, match="junk.safetensors is not a readable safetensors"):
        load_checkpoint(junk)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": Evil()}, path)
    with pytest.raises(CheckpointMismatchError, match="weights-only"):
        load_checkpoint(path)


def test_plain_pth_state_dicts_load(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"state_dict": nn.Linear(2, 2).state_dict()}, path)
    state, meta = load_checkpoint(path)
    assert set(state) == {"weight", "bias"} and meta == {}


def test_publish_replaces_whole_folders_and_recovers(tmp_path):
    final = tmp_path / "study"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging = tmp_path / "staging"
    staging.mkdir()
    atomic_write_text(staging / "new.txt", "new")
    publish_dir(staging, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"] and not staging.exists()
    # A publish killed between its two renames leaves ".study.old"; recovery puts it back.
    final.rename(tmp_path / ".study.old")
    assert recover_dir(final) and (final / "new.txt").exists()


def test_a_run_that_does_not_publish_writes_named_checkpoints_into_its_own_folder(tmp_path, monkeypatch):
    import torch

    from labkit.models.registry import declared_checkpoints, load_named_checkpoint, save_named_checkpoint

    shared, run = tmp_path / "shared", tmp_path / "run" / "checkpoints"
    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(shared))
    name = next(iter(declared_checkpoints()))
    save_named_checkpoint(name, {"w": torch.zeros(2)})  # a publishing run: the shared store
    monkeypatch.setenv("LABKIT_RUN_CHECKPOINTS", str(run))
    written = save_named_checkpoint(name, {"w": torch.ones(2)})
    assert written == run / f"{name}.safetensors"
    assert torch.equal(load_named_checkpoint(name)[0]["w"], torch.ones(2)), "the run reads what it produced"
    monkeypatch.delenv("LABKIT_RUN_CHECKPOINTS")
    assert torch.equal(load_named_checkpoint(name)[0]["w"], torch.zeros(2)), "the shared checkpoint is untouched"
