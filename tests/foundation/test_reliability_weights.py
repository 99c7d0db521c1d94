"""Issue 17, weights: no silent random weights (1), corrupt files named (8), a missing named file is an error (10).

Every file is built here from timm models created with ``pretrained=False`` (no downloads; HF_HUB_OFFLINE=1).
"""

import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file

from labkit.core.checkpoints import load_checkpoint, load_training_state, save_checkpoint, save_training_state
from labkit.core.errors import CheckpointMismatchError, WeightsFileError, WeightsUnavailableError
from labkit.models.backbones import create_backbone
from labkit.models.segmentation import create_segmenter


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    save_checkpoint(folder / "vit_tiny", vit.state_dict())
    resnet = timm.create_model("resnet18", pretrained=False)
    save_checkpoint(folder / "resnet18", resnet.state_dict())
    save_file({"foo.weight": torch.zeros(3)}, str(folder / "foo.safetensors"))
    torch.save({"foo.weight": torch.zeros(3)}, folder / "foo.pth")
    torch.save({"epochs": 3, "name": "not weights"}, folder / "nontensor.pth")
    headless = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    save_file(headless, str(folder / "headless.safetensors"))
    partial = dict(headless)
    del partial["layer4.1.conv2.weight"]
    save_file(partial, str(folder / "partial.safetensors"))
    return {
        "folder": folder,
        "vit": folder / "vit_tiny.safetensors",
        "resnet": folder / "resnet18.safetensors",
        "resnet_model": resnet,
        "foo_st": folder / "foo.safetensors",
        "foo_pth": folder / "foo.pth",
        "nontensor": folder / "nontensor.pth",
        "headless": folder / "headless.safetensors",
        "partial": folder / "partial.safetensors",
    }


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"features_only": True}, {}])
def test_a_file_for_another_architecture_is_never_a_random_backbone(files, kwargs):
    with pytest.raises(CheckpointMismatchError) as info:
        create_backbone("resnet18", weights_path=files["vit"], **kwargs)
    message = str(info.value)
    assert str(files["vit"]) in message and "missing key(s)" in message and "conv1.weight" in message
    assert "unexpected key(s)" in message and "blocks.0.attn.qkv.weight" in message


@pytest.mark.parametrize("name", ["foo_st", "foo_pth"])
@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"features_only": True}])
def test_a_file_with_unrelated_keys_is_refused(files, name, kwargs):
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\).*unexpected key\(s\): foo.weight"):
        create_backbone("resnet18", weights_path=files[name], **kwargs)


def test_a_pth_holding_a_non_tensor_dict_is_refused_naming_it(files):
    with pytest.raises(CheckpointMismatchError, match=r"nontensor.pth does not hold a state dict of tensors.*'epochs'"):
        create_backbone("resnet18", weights_path=files["nontensor"], num_classes=0)


def test_one_missing_backbone_key_is_named(files):
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\): layer4.1.conv2.weight"):
        create_backbone("resnet18", weights_path=files["partial"], num_classes=0)


def test_segmenter_imagenet_path_refuses_a_wrong_file(files):
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        create_segmenter("unet", "resnet18", weights="pretrained", weights_path=files["vit"], num_classes=2)
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        create_segmenter("unet", "resnet18", weights=str(files["foo_st"]), num_classes=2)


def test_matching_files_load_fully_and_only_the_head_may_be_missing(files):
    reference = files["resnet_model"]
    for kwargs in ({}, {"num_classes": 0}, {"num_classes": 5}, {"features_only": True}):
        model = create_backbone("resnet18", weights_path=files["resnet"], **kwargs)
        assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight), kwargs
    # A file without the classifier head fills a backbone whose head the caller replaces or drops.
    for kwargs in ({"num_classes": 0}, {"num_classes": 5}, {"features_only": True}):
        model = create_backbone("resnet18", weights_path=files["headless"], **kwargs)
        assert torch.equal(model.conv1.weight, reference.conv1.weight), kwargs
    seg = create_segmenter("unet", "resnet18", weights="pretrained", weights_path=files["resnet"], num_classes=2)
    assert torch.equal(seg.encoder.model.conv1.weight, reference.conv1.weight)


def test_vit_file_with_another_input_size_still_loads(files):
    """timm's checkpoint filter (position embeddings resampled) still runs: no false alarm."""
    model = create_backbone("vit_tiny_patch16_224", weights_path=files["vit"], num_classes=0, img_size=112)
    assert model(torch.zeros(1, 3, 112, 112)).shape == (1, 192)


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_corrupt_safetensors_are_named(files, tmp_path, kind):
    path = tmp_path / f"{kind}.safetensors"
    if kind == "random":
        path.write_bytes(
            torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
            .numpy()
            .tobytes()
        )
    else:
        path.write_bytes(files["resnet"].read_bytes()[:5000])
    for call in (lambda: load_checkpoint(path), lambda: create_backbone("resnet18", weights_path=path, num_classes=0)):
        with pytest.raises(CheckpointMismatchError, match=rf"{kind}.safetensors is not a readable safetensors"):
            call()


def test_a_zero_byte_pth_is_named(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointMismatchError, match=r"empty.pth is empty \(0 bytes\)"):
        create_backbone("resnet18", weights_path=path, num_classes=0)
    with pytest.raises(CheckpointMismatchError, match=r"empty.pth is empty"):
        load_training_state(path)


class _Payload:
    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (open, (str(self.flag), "w"))


def test_training_state_with_a_pickle_payload_is_named_and_never_runs(tmp_path):
    flag = tmp_path / "ran.flag"
    path = tmp_path / "state.pth"
    path.write_bytes(pickle.dumps({"model": _Payload(flag)}))
    with pytest.raises(CheckpointMismatchError, match=r"training state .*state.pth cannot be read as weights only"):
        load_training_state(path)
    assert not flag.exists()
    torch.save({"model": _Payload(flag)}, tmp_path / "state2.pth")
    with pytest.raises(CheckpointMismatchError, match="state2.pth"):
        load_training_state(tmp_path / "state2.pth")
    assert not flag.exists()
    good = save_training_state(tmp_path / "good.pth", {"epoch": 2, "model": {"w": torch.ones(2)}})
    assert load_training_state(good)["epoch"] == 2
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_training_state(tmp_path / "nope.pth")


def test_a_named_weights_file_that_does_not_exist_is_not_unavailable(tmp_path):
    missing = tmp_path / "typo.safetensors"
    for call in (
        lambda: create_backbone("resnet18", weights_path=missing, num_classes=0),
        lambda: create_backbone("resnet18", weights=str(missing)),
        lambda: create_segmenter("unet", "resnet18", weights="pretrained", weights_path=missing),
    ):
        with pytest.raises(WeightsFileError, match="typo.safetensors does not exist") as info:
            call()
        assert not isinstance(info.value, WeightsUnavailableError)  # studies turn that into "not evaluated"
