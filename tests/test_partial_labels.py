"""Label sets in the detector's loss: an untyped WBC box teaches "some WBC type", never a type and
never background; a typed box is scored exactly as plain ultralytics scores it."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.loss import v8DetectionLoss

from wbc.partial_labels import PartialLabelBCE, PartialLabelDetectionLoss, any_member, set_matrix, some_member_scores
from wbc.weights import model_config

NAMES = ["A", "B", "RBC"]  # A and B: two WBC types
SETS = set_matrix({"WBC": ["A", "B"]}, NAMES)  # label id 3 = "A or B"


def test_set_rows_get_the_noisy_or_loss_and_single_rows_plain_bce():
    logits = torch.tensor([[1.0, -2.0, -1.0], [0.5, 0.3, -3.0], [-4.0, -4.0, 0.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0.8, 0.0, 0.0], [0.35, 0.35, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    loss = PartialLabelBCE()(logits, target)
    plain = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    torch.testing.assert_close(loss[[0, 2]], plain[[0, 2]])  # typed and background rows: ultralytics' BCE
    p = logits[1].sigmoid()
    some = 1 - (1 - p[0]) * (1 - p[1])
    expected = -(0.7 * torch.log(some) + 0.3 * torch.log(1 - some)) - torch.log(1 - p[2])
    torch.testing.assert_close(loss[1].sum(), expected)


def test_an_untyped_box_teaches_some_type_but_no_type():
    bce = PartialLabelBCE()
    target = torch.tensor([[0.45, 0.45, 0.0]])
    # whichever member carries the cell, the loss is the same: no type is preferred
    a_high = bce(torch.tensor([[3.0, -3.0, -3.0]]), target).sum()
    b_high = bce(torch.tensor([[-3.0, 3.0, -3.0]]), target).sum()
    torch.testing.assert_close(a_high, b_high)
    # and "no member" (background) costs more than "one member": the cell is not taught as background
    assert bce(torch.tensor([[-3.0, -3.0, -3.0]]), target).sum() > a_high + 1.0
    # a non-member class is still pushed down
    logits = torch.tensor([[0.0, 0.0, 2.0]], requires_grad=True)
    bce(logits, target).sum().backward()
    assert logits.grad[0, 2] > 0 and logits.grad[0, 0] < 0 and logits.grad[0, 1] < 0


def test_any_member_is_the_noisy_or():
    p = torch.tensor([[0.5, 0.5, 0.9]])
    torch.testing.assert_close(any_member(p, SETS), torch.tensor([[0.75]]), atol=1e-5, rtol=0)


def test_some_member_scores_raise_the_best_member_to_the_noisy_or_and_keep_the_ranking():
    scores = torch.tensor([[[0.5, 0.0], [0.5, 0.3], [0.9, 0.2]]])  # (1 image, classes A B RBC, 2 anchors)
    out = some_member_scores(scores, [0, 1])
    torch.testing.assert_close(out[0, :2, 0], torch.tensor([0.75, 0.75]))  # a tie stays a tie, at 1 - 0.5 * 0.5
    torch.testing.assert_close(out[0, :2, 1], torch.tensor([0.0, 0.3]))  # one member: its own score
    torch.testing.assert_close(out[0, 2], scores[0, 2])  # a non-member is untouched
    assert some_member_scores(scores, []) is scores


@pytest.fixture(scope="module")
def model():
    m = DetectionModel(model_config("yolov5n"), nc=3, verbose=False)
    m.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    return m


def batch_of(cls_typed: float, cls_other: float) -> dict:
    """Two 64 x 64 images, one WBC box each (centre, a quarter of the image)."""
    return {"batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[cls_typed], [cls_other]]),
            "bboxes": torch.tensor([[0.5, 0.5, 0.25, 0.25], [0.5, 0.5, 0.25, 0.25]])}


def class_gradients(model, criterion, batch, seed=0):
    torch.manual_seed(seed)
    x = torch.rand(2, 3, 64, 64)
    preds = model(x)
    scores = preds["scores"] if isinstance(preds, dict) else preds[1]["scores"]
    scores.retain_grad()
    loss, _ = criterion(preds, batch)
    loss.sum().backward()
    return scores.grad  # (batch, nc, anchors)


def test_mixed_batch_typed_box_is_plain_ultralytics_and_untyped_box_prefers_no_type(model):
    """A batch with a typed WBC (class A) in image 0 and an untyped one (label set WBC) in image 1."""
    model.zero_grad()
    partial = class_gradients(model, PartialLabelDetectionLoss(model, SETS), batch_of(0, 3))
    model.zero_grad()
    plain = class_gradients(model, v8DetectionLoss(model), batch_of(0, 0))
    # image 0 (typed): ultralytics' own loss; the normaliser (sum of target scores) is shared across
    # the batch, so compare directions rather than scale
    assert F.cosine_similarity(partial[0].flatten(), plain[0].flatten(), dim=0) > 0.999
    # image 1 (untyped): on every anchor, A and B are pushed the same way (no type is taught)
    g1 = partial[1]
    assert ((g1[0] * g1[1]) >= 0).all()
    assert (g1[0] != plain[1][0]).any()  # and it is not the typed loss


def test_assigned_set_box_pushes_every_member_up_and_non_members_down():
    """Predictions boxed exactly on the cell: the set-labelled box's anchors get the set's target
    (its score spread over A and B), and the loss pushes A and B up and RBC down there."""
    from wbc.partial_labels import PartialLabelAssigner

    ys, xs = torch.meshgrid(torch.arange(8) * 8 + 4.0, torch.arange(8) * 8 + 4.0, indexing="ij")
    anchors = torch.stack([xs.flatten(), ys.flatten()], 1)  # one 8 x 8 level, stride 8
    box = torch.tensor([16.0, 16.0, 48.0, 48.0])
    pd_bboxes = box.expand(1, len(anchors), 4).clone()
    logits = torch.full((1, len(anchors), 3), -3.0, requires_grad=True)
    assigner = PartialLabelAssigner(SETS, topk=10, num_classes=3, alpha=0.5, beta=6.0, stride=[8])
    _, _, target, fg, _ = assigner(logits.detach().sigmoid(), pd_bboxes, anchors, torch.tensor([[[3.0]]]), box.view(1, 1, 4),
                                   torch.ones(1, 1, 1))
    assert fg.sum() > 0
    rows = target[fg]
    torch.testing.assert_close(rows[:, 0], rows[:, 1])
    assert (rows[:, 2] == 0).all() and (rows.sum(1) > 0.9).all()
    PartialLabelBCE()(logits, target).sum().backward()
    g = logits.grad[fg]
    assert (g[:, 0] < 0).all() and (g[:, 1] < 0).all() and (g[:, 2] > 0).all()
