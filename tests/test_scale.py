"""wbc.scale: the red-cell diameter of a field, on drawn fields of known diameter and on real ones."""

import cv2
import numpy as np
import pytest

from wbc.paths import data_root
from wbc.scale import RBC_DIAMETER_UM, ScaleEstimate, estimate_scale

# BGR: background, red-cell body, its pale centre, WBC cytoplasm, nucleus / platelet
MAY_GRUENWALD = ((228, 226, 238), (170, 150, 205), (200, 190, 225), (200, 170, 190), (120, 40, 90))
BLUE_GREY = ((200, 204, 200), (150, 110, 90), (175, 150, 140), (190, 160, 180), (130, 40, 110))


def smear(diameter: float, seed: int = 0, side: int | None = None, cells: int = 60, wbcs: int = 2, platelets: int = 8, stain=MAY_GRUENWALD):
    """(BGR field, its red cells' median area-equivalent diameter in px). Red cells are slightly
    elliptical (aspect 0.8 .. 1) pale-centred discs, about one in three touching another; WBCs are
    ~2x as wide with a dark nucleus; platelets a fifth as wide; optics blur and sensor noise on top."""
    rng = np.random.default_rng(seed)
    side = side or int(9 * diameter)
    background, body, centre, cytoplasm, dark = stain
    img = np.full((side, side, 3), background, np.uint8)
    placed, n, diameters = np.zeros((cells + wbcs + platelets, 3)), 0, []  # x, y, radius

    def place(x, y, r, gap):
        nonlocal n
        if np.all(np.hypot(placed[:n, 0] - x, placed[:n, 1] - y) >= gap * (placed[:n, 2] + r)):
            placed[n], n = (x, y, r), n + 1
            return True
        return False

    for _ in range(wbcs):
        x, y, r = *rng.uniform(diameter, side - diameter, 2), diameter * rng.uniform(0.9, 1.1)
        if place(x, y, r, 1.05):
            cv2.circle(img, (int(x), int(y)), int(r), cytoplasm, -1, cv2.LINE_AA)
            cv2.circle(img, (int(x), int(y)), int(0.6 * r), dark, -1, cv2.LINE_AA)
    for i in range(10 * cells):
        if len(diameters) >= cells:
            break
        d = diameter * rng.uniform(0.93, 1.07)
        x, y = rng.uniform(-0.3 * d, side + 0.3 * d, 2)
        if i % 3 == 0 and n:  # a neighbour just touching one already there
            px, py, pr = placed[rng.integers(n)]
            angle = rng.uniform(0, 2 * np.pi)
            x, y = px + (pr + d / 2) * np.cos(angle), py + (pr + d / 2) * np.sin(angle)
        if not place(x, y, d / 2, 0.97):
            continue
        aspect, angle = rng.uniform(0.8, 1.0), rng.uniform(0, 180)
        axes = np.array([1 / np.sqrt(aspect), np.sqrt(aspect)]) * d  # the area of a disc of diameter d
        cv2.ellipse(img, ((x, y), tuple(axes), angle), body, -1, cv2.LINE_AA)
        cv2.ellipse(img, ((x, y), tuple(0.4 * axes), angle), centre, -1, cv2.LINE_AA)
        diameters.append(d)
    for _ in range(platelets):
        x, y = rng.uniform(0, side, 2)
        if place(x, y, diameter / 10, 1.0):
            cv2.circle(img, (int(x), int(y)), max(1, int(diameter / 10)), dark, -1, cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), max(0.5, diameter / 40))
    noise = rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img + noise, 0, 255).astype(np.uint8), float(np.median(diameters))


def rescaled(image, f):
    return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


@pytest.mark.parametrize("diameter", [15, 30, 45, 90, 130])
def test_drawn_fields_of_known_red_cell_diameter(diameter):
    for seed in range(2):
        field, truth = smear(diameter, seed)
        estimate = estimate_scale(field)
        assert estimate.diameter_px == pytest.approx(truth, rel=0.1), (seed, estimate, truth)
        assert 10 <= estimate.cells <= 60  # of 60 drawn, some outside the centre crop it looks at
        assert estimate.pixel_size_um == pytest.approx(RBC_DIAMETER_UM / estimate.diameter_px)


def test_a_large_field_of_small_cells():
    field, truth = smear(45, side=2000, cells=1200, wbcs=10, platelets=100)  # 2000 x 2000, ~44 cells across
    estimate = estimate_scale(field)
    assert estimate.diameter_px == pytest.approx(truth, rel=0.1)
    assert estimate.cells >= 20


def test_another_stain_and_a_crowd_of_wbcs():
    field, truth = smear(40, seed=3, stain=BLUE_GREY)
    assert estimate_scale(field).diameter_px == pytest.approx(truth, rel=0.1)
    for seed in (1, 2):  # WBCs cover about half the cells' area
        field, truth = smear(40, seed=seed, wbcs=16, platelets=40)
        assert estimate_scale(field).diameter_px == pytest.approx(truth, rel=0.1), seed


@pytest.mark.parametrize("shape", [(360, 363), (640, 480), (2000, 2000)])
def test_blank_uniform_and_noise_fields_give_no_estimate(shape):
    rng = np.random.default_rng(0)
    for field in (np.zeros((*shape, 3), np.uint8), np.full((*shape, 3), 255, np.uint8),
                  np.clip(rng.normal(200, 3, (*shape, 3)), 0, 255).astype(np.uint8)):
        estimate = estimate_scale(field)
        assert estimate.diameter_px is None and estimate.pixel_size_um is None


def test_too_few_cells_give_no_estimate():
    field, _ = smear(60, side=400, cells=3, wbcs=0, platelets=0)
    estimate = estimate_scale(field)
    assert estimate.diameter_px is None and estimate.cells < 5
    assert estimate_scale(np.full((4, 4, 3), 200, np.uint8)).diameter_px is None


def test_rescaled_field_gives_a_proportional_estimate():
    field, _ = smear(45, seed=5)
    base = estimate_scale(field).diameter_px
    for f in (0.5, 0.75, 1.5, 2, 3):
        assert estimate_scale(rescaled(field, f)).diameter_px == pytest.approx(f * base, rel=0.1), f


def test_rescaled_real_fields_give_proportional_estimates():
    files = sorted((data_root() / "pbc" / "images" / "val").glob("*.jpg"))[:3]
    if not files:
        pytest.skip("PBC fields not present")
    for path in files:
        field = cv2.imread(str(path))
        base = estimate_scale(field).diameter_px
        assert 50 < base < 110, path  # PBC's red cells are ~75 px across
        for f in (0.5, 2):
            assert estimate_scale(rescaled(field, f)).diameter_px == pytest.approx(f * base, rel=0.1), (path, f)


def test_pixel_size_and_bad_input():
    assert ScaleEstimate(75.0, 12).pixel_size_um == pytest.approx(0.1)
    assert ScaleEstimate(None, 2).pixel_size_um is None
    with pytest.raises(ValueError, match="BGR"):
        estimate_scale(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError, match="BGR"):
        estimate_scale(np.zeros((100, 100, 3), np.float32))
