"""ONNX export: the onnxruntime path gives the PyTorch path's cells."""

import cv2
import pytest

pytest.importorskip("onnxruntime")


def test_onnx_cells_match_pytorch_cells(trained, tmp_path):
    from wbc.canonical import prepare
    from wbc.export import OnnxAnalyzer, export_onnx
    from wbc.inference import WBCAnalyzer

    data, weights, result = trained
    head = result["save_dir"] / "head.pt"
    written = export_onnx(weights, tmp_path / "model", head=head)
    assert set(written) == {"detector", "head", "meta"}
    images = [cv2.imread(str(p)) for p in sorted((prepare(data).root / "images" / "val").iterdir())[:6]]
    torch_cells = WBCAnalyzer(weights, head, conf=0.001, types=False)(images)  # the export types by the detector alone
    onnx_cells = OnnxAnalyzer(tmp_path / "model.onnx", conf=0.001)(images[:4]) + OnnxAnalyzer(tmp_path / "model.onnx", conf=0.001)(images[4:])
    assert sum(map(len, torch_cells)) >= len(images) and [len(c) for c in torch_cells] == [len(c) for c in onnx_cells]
    for row_t, row_o in zip(torch_cells, onnx_cells):
        for t, o in zip(row_t, row_o):
            assert max(abs(a - b) for a, b in zip(t.box, o.box)) <= 1.0 and t.class_name == o.class_name
            assert abs(t.confidence - o.confidence) < 1e-3
            assert {k: v for k, (v, _) in t.attributes.items()} == {k: v for k, (v, _) in o.attributes.items()}
