import time

import pytest
import timm
import torch

from labkit.core.checkpoints import save_checkpoint
from labkit.core.errors import CheckpointMismatchError, WeightsFileError, WeightsUnavailableError
from labkit.models.backbones import create_backbone
from labkit.models.registry import load_named_checkpoint, save_named_checkpoint
from labkit.models.segmentation import create_segmenter


def test_missing_pretrained_weights_fail_fast_naming_three_ways():
    start = time.time()
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("dinov2_vits14", img_size=112)
    assert time.time() - start < 3
    message = str(info.value)
    assert "LABKIT_WEIGHTS_DIR" in message and "Hugging Face cache" in message and "online" in message
    assert "set that weights parameter to random" in message and "weights_path=" not in message


def test_random_only_when_asked():
    model = create_backbone("test_vit", weights="random", num_classes=0)
    assert model(torch.zeros(1, 3, 160, 160)).shape[0] == 1


def test_local_file_and_weights_dir(tmp_path, monkeypatch):
    reference = timm.create_model("resnet10t", pretrained=False)
    save_checkpoint(tmp_path / "resnet10t.c3_in1k", reference.state_dict())
    model = create_backbone("resnet10t", weights_path=tmp_path / "resnet10t.c3_in1k.safetensors")
    assert torch.equal(model.conv1[0].weight, reference.conv1[0].weight)
    monkeypatch.setenv("LABKIT_WEIGHTS_DIR", str(tmp_path))
    model = create_backbone("resnet10t", num_classes=0)
    assert torch.equal(model.conv1[0].weight, reference.conv1[0].weight)


def test_bad_paths_and_wrong_architectures_are_named(tmp_path):
    # A named file that is missing or not a checkpoint is a mistake (WeightsFileError), never "unavailable".
    with pytest.raises(WeightsFileError, match="does not exist"):
        create_backbone("resnet10t", weights_path=tmp_path / "missing.safetensors")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(WeightsFileError, match="is not a checkpoint"):
        create_backbone("resnet10t", weights_path=text)
    save_checkpoint(tmp_path / "vit", timm.create_model("test_vit", pretrained=False).state_dict())
    with pytest.raises(CheckpointMismatchError, match=r"does not fit.*missing key\(s\)"):
        create_backbone("resnet10t", weights_path=tmp_path / "vit.safetensors")


def test_named_checkpoints_say_which_study_makes_them(tmp_path, monkeypatch):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "maker.yaml").write_text(
        "name: maker\ntitle: t\nnotebook: 99_maker.ipynb\nheadline: h\n"
        "produces:\n  - {name: tiny-encoder, arch: resnet10t, help: test}\n"
        'params:\n  seeds: {type: "list[int]", value: [0], help: s}\n'
    )
    monkeypatch.setenv("LABKIT_SPECS", str(spec_dir))
    with pytest.raises(WeightsUnavailableError, match=r"'maker' produces it: run `labkit reproduce maker`"):
        create_backbone("resnet10t", weights="labkit:tiny-encoder")
    with pytest.raises(WeightsUnavailableError, match="no study declares"):
        load_named_checkpoint("unknown-thing")
    source = timm.create_model("resnet10t", pretrained=False)
    save_named_checkpoint("tiny-encoder", source, {"epochs": 1})
    model = create_backbone("resnet10t", weights="labkit:tiny-encoder")
    assert torch.equal(model.fc.weight, source.fc.weight)
    assert load_named_checkpoint("tiny-encoder")[1]["study"] == "maker"


def test_segmenter_takes_encoder_weights_from_the_factory(tmp_path):
    encoder = timm.create_model("resnet10t", pretrained=False, features_only=True, in_chans=3)
    save_checkpoint(tmp_path / "enc", encoder.state_dict())
    model = create_segmenter(
        "unet", "resnet10t", weights=str(tmp_path / "enc.safetensors"), in_channels=3, num_classes=3
    )
    assert torch.equal(model.encoder.model.conv1[0].weight, encoder.conv1[0].weight)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(WeightsUnavailableError):
        create_segmenter("unet", "resnet10t", weights="pretrained")
