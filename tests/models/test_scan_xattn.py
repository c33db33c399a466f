"""SCAN stacked cross attention: scores against a naive reference, score-matrix recall, overfitting."""

import pytest
import torch
import torch.nn.functional as F

from visem.losses import ranking_loss
from visem.metrics import retrieval_recall
from visem.models import build_model
from visem.losses import ranking_loss_from_scores
from visem.models.scan_xattn import recall_from_scores

DIMS = {"image_dim": 12, "vocab_size": 30}
SMALL = {"embed_dim": 16, "word_dim": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kw):
    torch.manual_seed(0)
    return build_model("scan-xattn", {**SMALL, **kw}, dims=DIMS)


def _naive_score(v, e, direction, pooling, lam1, lam2, leaky=0.1):
    """One image (N, D) and one caption (M, D), straight from the SCAN paper, with loops."""
    if direction == "t2i":
        s = F.leaky_relu(v @ e.T, leaky)  # (N, M)
        s = s / (s.norm(dim=1, keepdim=True) + 1e-8)  # normalise over words
        rel = []
        for j in range(e.shape[0]):
            alpha = torch.softmax(lam1 * s[:, j], dim=0)
            a = (alpha[:, None] * v).sum(0)
            rel.append(F.cosine_similarity(e[j], a, dim=0))
    else:
        s = F.leaky_relu(v @ e.T, leaky)
        s = s / (s.norm(dim=0, keepdim=True) + 1e-8)  # normalise over regions
        rel = []
        for i in range(v.shape[0]):
            alpha = torch.softmax(lam1 * s[i, :], dim=0)
            a = (alpha[:, None] * e).sum(0)
            rel.append(F.cosine_similarity(v[i], a, dim=0))
    rel = torch.stack(rel)
    if pooling == "lse":
        return torch.logsumexp(lam2 * rel, 0) / lam2
    return rel.mean()


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
@pytest.mark.parametrize("pooling", ["lse", "avg"])
def test_scores_match_naive_reference(direction, pooling):
    model = _model(direction=direction, pooling=pooling, lambda_softmax=4.0).eval()
    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, 5, 12, generator=g)
    text = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11]])
    with torch.no_grad():
        regions = model.encode_regions(image)
        words, mask = model.encode_words(text)
        s = model.scores(regions, words, mask)
        for i in range(3):
            for t in range(3):
                m = int(mask[t].sum())
                ref = _naive_score(regions[i], words[t, :m], direction, pooling, 4.0, model.lambda_lse)
                assert s[i, t].item() == pytest.approx(ref.item(), abs=1e-5)
        # blocked evaluation gives the same matrix
        assert torch.allclose(_model(direction=direction, pooling=pooling, lambda_softmax=4.0,
                                     eval_block=2).score_matrix(image, text), s, atol=1e-6)


def test_each_direction_has_its_own_temperatures():
    # SCAN's best single models: t2i lambda_1 = 9, lambda_2 = 6; i2t lambda_1 = 4, lambda_2 = 5 (Flickr30K)
    t2i, i2t = _model(direction="t2i"), _model(direction="i2t")
    assert (t2i.lambda_softmax, t2i.lambda_lse) == (9.0, 6.0)
    assert (i2t.lambda_softmax, i2t.lambda_lse) == (4.0, 5.0)
    coco = _model(direction="i2t", lambda_lse=20.0)
    assert (coco.lambda_softmax, coco.lambda_lse) == (4.0, 20.0)


def test_recall_and_hinge_from_scores_agree_with_embedding_versions():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 5, generator=g), dim=1)
    txt = F.normalize(torch.randn(12, 5, generator=g), dim=1)
    t2i = torch.arange(12) // 2
    assert recall_from_scores(img @ txt.T, t2i) == retrieval_recall(img, txt, t2i)
    pairs = txt[::2]
    for hardest in (True, False):
        assert ranking_loss_from_scores(img @ pairs.T, 0.2, hardest).item() == pytest.approx(
            ranking_loss(img, pairs, 0.2, hardest).item(), rel=1e-6)


def test_overfits_tiny_paired_set_to_r1_100():
    g = torch.Generator().manual_seed(0)
    n = 8
    model = _model()
    image = torch.randn(n, 4, 12, generator=g)
    text = torch.zeros(n, 5, dtype=torch.long)
    text[:, :3] = torch.arange(2, 2 + 3 * n).view(n, 3) % 30
    opt = model.make_optimizers(1e-2)
    for _ in range(150):
        model.train_step({"image": image, "text": text}, opt)
    m = model.evaluate({"image": image, "text": text, "txt_to_img": torch.arange(n)})
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0
