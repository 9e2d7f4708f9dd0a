"""Stain, camera and optics augmentation for training on smears from other labs (albumentations).

Smears differ in stain batch and protocol (Wright, Giemsa, May-Grünwald: hue and saturation of
nuclei and cytoplasm), camera white balance and gamma, focus and JPEG compression. ``stain: p`` in a
hyp yaml adds these colour-only transforms to ultralytics' pipeline (its ``augmentations``
argument), each drawn with a probability scaled by ``p`` (0 turns them off). Boxes are untouched.
"""

from __future__ import annotations


def stain_augmentations(p: float) -> list:
    """The transforms for strength ``p`` in [0, 1] (ultralytics applies them after mosaic and affine)."""
    import albumentations as A

    if not 0 <= p <= 1:
        raise ValueError(f"stain: {p} is not a probability in [0, 1]")
    if p == 0:
        return []
    return [
        A.HEStain(method="random_preset", intensity_scale_range=(0.8, 1.2), intensity_shift_range=(-0.1, 0.1), p=0.5 * p),  # stain mix
        A.HueSaturationValue(hue_shift_limit=12, sat_shift_limit=40, val_shift_limit=20, p=0.6 * p),  # stain batch / protocol
        A.PlanckianJitter(p=0.3 * p),  # lamp colour temperature / camera white balance
        A.RandomGamma(gamma_limit=(70, 150), p=0.3 * p),  # camera response
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.25, p=0.3 * p),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.Defocus(radius=(1, 3))], p=0.2 * p),  # focus
        A.ImageCompression(quality_range=(40, 95), p=0.3 * p),  # JPEG from the camera or slide scanner
        A.GaussNoise(std_range=(0.01, 0.04), p=0.15 * p),  # sensor noise
        A.ToGray(p=0.05 * p),  # morphology without colour
        A.ChannelShuffle(p=0.1 * p),  # far-off stains (blue-grey red cells of some Giemsa / May-Grünwald smears)
    ]
