"""VSE++ and the shared text helpers: hand-computed losses, padding, overfitting."""

import pytest
import torch

from visem.models import build_model
from visem.models.text import decode_ids, lengths_of

DIMS = {"image_dim": 12, "vocab_size": 30}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kw):
    torch.manual_seed(0)
    return build_model("vsepp", {"embed_dim": 16, "word_dim": 8, **kw}, dims=DIMS)


def _hinge_by_hand(img, txt, margin, hardest):
    n = img.shape[0]
    s = img @ txt.T
    total = 0.0
    for k in range(n):
        a = [max(0.0, margin - s[k, k].item() + s[k, j].item()) for j in range(n) if j != k]
        b = [max(0.0, margin - s[k, k].item() + s[i, k].item()) for i in range(n) if i != k]
        total += (max(a) + max(b)) if hardest else (sum(a) + sum(b))
    return total  # summed over the batch, as VSE++'s ContrastiveLoss


@pytest.mark.parametrize("hardest", [True, False])
def test_loss_matches_hand_computation(hardest):
    model = _model(hardest=hardest)
    batch = model.example_batch(6, torch.Generator().manual_seed(1))
    terms = model.loss(batch)
    img, txt = model.embed_image(batch["image"]), model.embed_text(batch["text"])
    assert terms["loss"].item() == pytest.approx(_hinge_by_hand(img.detach(), txt.detach(), 0.2, hardest), rel=1e-5)
    # embeddings are unit vectors (cosine scores)
    assert torch.allclose(img.norm(dim=1), torch.ones(6), atol=1e-5)


def test_text_embedding_ignores_padding_length():
    model = _model().eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [9, 0, 0, 0, 0]])
    longer = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    assert torch.allclose(model.embed_text(ids), model.embed_text(longer), atol=1e-6)
    # the state at the last real token, not at the last column
    assert not torch.allclose(model.embed_text(ids)[0], model.embed_text(ids[:, :2])[0])


def test_bad_inputs_name_the_field():
    model = _model()
    with pytest.raises(ValueError, match="text"):
        model.embed_text(torch.tensor([[1, 2, 99]]))
    with pytest.raises(ValueError, match="image"):
        model.embed_image(torch.randn(3, 5))


def test_decode_stops_at_first_pad_and_lengths():
    vocab = ["<pad>", "<unk>", "<start>", "<end>", "a", "dog"]
    ids = torch.tensor([[4, 5, 0, 5], [1, 0, 0, 0]])
    assert decode_ids(ids, vocab) == ["a dog", "<unk>"]
    assert lengths_of(ids).tolist() == [2, 1]  # up to the first pad (a decoder may emit words after it)
    assert lengths_of(torch.zeros(1, 3, dtype=torch.long)).tolist() == [1]


def test_overfits_tiny_paired_set_to_r1_100():
    g = torch.Generator().manual_seed(0)
    n = 10
    model = _model(embed_dim=32)
    image = torch.randn(n, 12, generator=g)
    text = torch.arange(2, 2 + 2 * n).view(n, 2) % 30  # distinct two-word captions
    opt = model.make_optimizers(1e-2)
    for _ in range(150):
        model.train_step({"image": image, "text": text}, opt)
    m = model.evaluate({"image": image, "text": text, "txt_to_img": torch.arange(n)})
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0
