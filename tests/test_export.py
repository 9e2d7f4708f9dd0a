"""ONNX export: the onnxruntime path gives the PyTorch path's cells, types included."""

import cv2
import pytest

pytest.importorskip("onnxruntime")


def _same_cells(torch_cells, onnx_cells):
    assert [len(c) for c in torch_cells] == [len(c) for c in onnx_cells]
    for row_t, row_o in zip(torch_cells, onnx_cells):
        for t, o in zip(row_t, row_o):
            assert max(abs(a - b) for a, b in zip(t.box, o.box)) <= 1.0 and t.class_name == o.class_name
            assert abs(t.confidence - o.confidence) < 1e-3
            assert {k: v for k, (v, _) in t.attributes.items()} == {k: v for k, (v, _) in o.attributes.items()}


@pytest.fixture(scope="module")
def type_head(trained, tmp_path_factory):
    """A type head beside the attribute head (both pool layers 2 + 4)."""
    from wbc.attributes.train import train_head

    data, detector, _ = trained
    root = tmp_path_factory.mktemp("types")
    config = root / "head.yaml"
    config.write_text("layers: [2, 4]\n")
    result = train_head(str(detector), data, epochs=12, batch=8, imgsz=96, name="types", config=str(config), project=root,
                        workers=0, lr=3e-3, jitter=0.03, types=True)
    return result["save_dir"] / "head.pt"


def test_onnx_cells_match_pytorch_cells(trained, tmp_path):
    from wbc.canonical import prepare
    from wbc.export import OnnxAnalyzer, export_onnx
    from wbc.inference import WBCAnalyzer

    data, weights, result = trained
    head = result["save_dir"] / "head.pt"
    written = export_onnx(weights, tmp_path / "model", head=head, types=False)
    assert set(written) == {"detector", "head", "meta"}
    images = [cv2.imread(str(p)) for p in sorted((prepare(data).root / "images" / "val").iterdir())[:6]]
    torch_cells = WBCAnalyzer(weights, head, conf=0.001, types=False)(images)
    onnx_cells = OnnxAnalyzer(tmp_path / "model.onnx", conf=0.001)(images[:4]) + OnnxAnalyzer(tmp_path / "model.onnx", conf=0.001)(images[4:])
    assert sum(map(len, torch_cells)) >= len(images)
    _same_cells(torch_cells, onnx_cells)


def test_the_exported_type_head_types_cells_as_the_pytorch_analyzer_does(trained, type_head, tmp_path):
    import json

    from wbc.canonical import prepare
    from wbc.export import OnnxAnalyzer, export_onnx
    from wbc.inference import WBCAnalyzer

    data, weights, result = trained
    head = result["save_dir"] / "head.pt"
    written = export_onnx(weights, tmp_path / "model", head=head, types=type_head, type_share=1.0)
    assert set(written) == {"detector", "head", "types", "meta"}
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["layers"] == [2, 4] and meta["head_layers"] == [2, 4] and meta["type_layers"] == [2, 4] and meta["type_share"] == 1.0
    assert meta["type_classes"] == prepare(data).spec.wbc_classes
    images = [cv2.imread(str(p)) for p in sorted((prepare(data).root / "images" / "val").iterdir())[:6]]
    fused = WBCAnalyzer(weights, head, conf=0.001, types=type_head, type_share=1.0)(images)
    alone = WBCAnalyzer(weights, head, conf=0.001, types=False)(images)
    # the fusion changes some types here (else this test would not tell the two paths apart) ...
    assert [[c.class_name for c in row] for row in fused] != [[c.class_name for c in row] for row in alone]
    # ... and onnxruntime gives the same ones; without the type head it types as the detector does
    _same_cells(fused, OnnxAnalyzer(tmp_path / "model.onnx", conf=0.001)(images))
    _same_cells(alone, OnnxAnalyzer(tmp_path / "model.onnx", conf=0.001, types=False)(images))
