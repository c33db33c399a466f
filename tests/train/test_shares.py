"""Term gradient shares: against norms computed by hand, weights and the gradient reversal included."""

import pytest
import torch

from visem.models import build_model
from visem.models.base import Objective
from visem.train.shares import gradient_norms, gradient_shares, low_share_terms


class _Two(torch.nn.Module):
    """A model whose two terms have known gradients: a = sum(w * x), b = (w . w) / 2."""

    def __init__(self, weight_b: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        self.weight_b = weight_b

    def encoder_parameters(self):
        return [self.w]

    def objective(self, batch, progress=0.0):
        return Objective({"a": (self.w * batch["x"]).sum(), "b": 0.5 * self.w.pow(2).sum()},
                         {"b": self.weight_b})


def test_norms_and_shares_by_hand():
    m = _Two(weight_b=0.1)
    batch = {"x": torch.tensor([1.0, 0.0])}
    norms = gradient_norms(m, batch)
    assert norms["a"] == pytest.approx(1.0)  # d/dw sum(w x) = x
    assert norms["b"] == pytest.approx(0.1 * 5.0)  # 0.1 * w, |w| = 5
    shares = gradient_shares(m, batch)
    assert shares == pytest.approx({"a": 1 / 1.5, "b": 0.5 / 1.5})
    assert low_share_terms(gradient_shares(_Two(weight_b=1e-3), batch)) == ["b"]
    # a term with weight 0 is off: it is not measured
    assert set(gradient_shares(_Two(weight_b=0.0), batch)) == {"a"}


def test_reversed_adversarial_terms_reach_the_encoders_scaled_by_gamma():
    torch.manual_seed(0)
    model = build_model("a3vse", {"embed_dim": 16, "word_dim": 8, "disc_hidden": 16, "heads": 2},
                        dims={"image_dim": 12, "vocab_size": 30})
    batch = model.example_batch(8, torch.Generator().manual_seed(0))
    at_end = gradient_norms(model, batch, progress=1.0)
    at_start = gradient_norms(model, batch, progress=0.0)
    assert at_start["d_v_t"] == 0.0  # gamma(0) = 0: nothing reversed reaches the encoders yet
    assert at_end["d_v_t"] > 0.0
    assert at_start["triplet_pair"] == pytest.approx(at_end["triplet_pair"])
