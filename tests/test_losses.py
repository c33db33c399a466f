"""Tests of visem.losses against naive references and library oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visem.losses import (
    contractive_penalty,
    grad_reverse,
    grl_schedule,
    kl_diag_gaussians,
    mmd,
    ranking_loss,
    wasserstein2_diag,
)

DTYPES = [torch.float32, torch.float64]


def tol(dtype: torch.dtype) -> dict[str, float]:
    """torch.testing tolerances for comparing against a float64 reference."""
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}


def approx_tol(dtype: torch.dtype) -> dict[str, float]:
    """The same tolerances, spelled for pytest.approx."""
    t = tol(dtype)
    return {"rel": t["rtol"], "abs": t["atol"]}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def unit(n: int, d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, dtype=torch.float64), dim=1).to(dtype)


# --------------------------------------------------------------------------
# ranking loss
# --------------------------------------------------------------------------
def naive_ranking(img: torch.Tensor, txt: torch.Tensor, margin: float, hardest: bool, mean: bool = False) -> float:
    """Seed 001 Eq. 8 / seed 003 Eq. 2 with explicit loops, in float64: summed over the pairs (or their mean)."""
    a, b = img.double().tolist(), txt.double().tolist()
    n = len(a)

    def s(i: int, j: int) -> float:
        return sum(x * y for x, y in zip(a[i], b[j]))

    total = 0.0
    for k in range(n):
        to_txt = [max(0.0, margin - s(k, k) + s(k, j)) for j in range(n) if j != k]
        to_img = [max(0.0, margin - s(k, k) + s(i, k)) for i in range(n) if i != k]
        total += (max(to_txt) + max(to_img)) if hardest else (sum(to_txt) + sum(to_img))
    return total / n if mean else total


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hardest", [False, True])
def test_ranking_loss_matches_naive_loop(dtype: torch.dtype, hardest: bool) -> None:
    img, txt = unit(7, 5, dtype), unit(7, 5, dtype)
    got = ranking_loss(img, txt, margin=0.3, hardest=hardest)
    assert got.dtype == dtype and got.shape == ()
    assert got.item() == pytest.approx(naive_ranking(img, txt, 0.3, hardest), **approx_tol(dtype))
    mean = ranking_loss(img, txt, margin=0.3, hardest=hardest, reduction="mean")
    assert mean.item() == pytest.approx(naive_ranking(img, txt, 0.3, hardest, mean=True), **approx_tol(dtype))


@pytest.mark.parametrize("hardest", [False, True])
def test_ranking_loss_matches_pytorch_metric_learning(hardest: bool) -> None:
    # PML's TripletMarginLoss with an un-normalised dot-product similarity,
    # a sum reducer and ref_emb (anchors from one modality, positives and
    # negatives from the other) computes exactly one direction of Eq. 8;
    # BatchHardMiner picks the hardest negative (the only positive is the
    # pair), giving one direction of seed 003 Eq. 2. Our loss is the sum of
    # both directions (reduction="sum", VSE++'s code) or that sum over the batch size ("mean").
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances, losses, miners, reducers

    img, txt = unit(9, 6), unit(9, 6)
    labels, ref_labels = torch.arange(9), torch.arange(9)  # distinct objects: PML treats `is` as same set
    dist = distances.DotProductSimilarity(normalize_embeddings=False)
    triplet = losses.TripletMarginLoss(margin=0.2, distance=dist, reducer=reducers.SumReducer())
    if hardest:
        miner = miners.BatchHardMiner(distance=dist)
        t1 = miner(img, labels, txt, ref_labels)
        t2 = miner(txt, labels, img, ref_labels)
    else:
        t1 = t2 = None
    expected = (
        triplet(img, labels, t1, ref_emb=txt, ref_labels=ref_labels)
        + triplet(txt, labels, t2, ref_emb=img, ref_labels=ref_labels)
    )
    got = ranking_loss(img, txt, margin=0.2, hardest=hardest)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    got = ranking_loss(img, txt, margin=0.2, hardest=hardest, reduction="mean")
    torch.testing.assert_close(got, expected / 9, rtol=1e-12, atol=1e-12)


def test_ranking_loss_known_answers_and_gradient() -> None:
    # Perfectly separated pairs beyond the margin: zero loss.
    eye = torch.eye(4, dtype=torch.float64)
    assert ranking_loss(eye, eye, margin=0.2).item() == 0.0
    same = torch.ones(3, 2, dtype=torch.float64)
    # Everything identical: every hinge is exactly the margin (3 pairs, 2 negatives each way).
    assert ranking_loss(same, same, margin=0.2).item() == pytest.approx(3 * 2 * 2 * 0.2)
    assert ranking_loss(same, same, margin=0.2, hardest=True).item() == pytest.approx(3 * 2 * 0.2)
    assert ranking_loss(same, same, margin=0.2, reduction="mean").item() == pytest.approx(2 * 2 * 0.2)
    with pytest.raises(ValueError, match="reduction"):
        ranking_loss(same, same, reduction="max")
    img = unit(5, 4).requires_grad_()
    txt = unit(5, 4).requires_grad_()
    ranking_loss(img, txt, hardest=True).backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert txt.grad is not None and torch.isfinite(txt.grad).all()


def test_ranking_loss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"img and txt must have the same shape.*\(4, 3\).*\(5, 3\)"):
        ranking_loss(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"txt contains NaN"):
        ranking_loss(torch.zeros(4, 3), torch.full((4, 3), math.nan))
    with pytest.raises(ValueError, match=r"img must be 2-D, got shape \(4,\)"):
        ranking_loss(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"at least 2 pairs"):
        ranking_loss(torch.zeros(1, 3), torch.zeros(1, 3))


# --------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------
def naive_mmd(x: torch.Tensor, y: torch.Tensor, sigmas: tuple[float, ...], unbiased: bool) -> float:
    xs, ys = x.double().numpy(), y.double().numpy()

    def k(a: np.ndarray, b: np.ndarray) -> float:
        d2 = float(((a - b) ** 2).sum())
        return sum(math.exp(-d2 / (2 * s * s)) for s in sigmas)

    n, m = len(xs), len(ys)
    pairs_xx = [(i, j) for i in range(n) for j in range(n) if not (unbiased and i == j)]
    pairs_yy = [(i, j) for i in range(m) for j in range(m) if not (unbiased and i == j)]
    xx = sum(k(xs[i], xs[j]) for i, j in pairs_xx) / len(pairs_xx)
    yy = sum(k(ys[i], ys[j]) for i, j in pairs_yy) / len(pairs_yy)
    xy = sum(k(xs[i], ys[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("sigmas", [(1.0,), (0.5, 1.0, 4.0)])
def test_mmd_matches_naive_loop(dtype: torch.dtype, unbiased: bool, sigmas: tuple[float, ...]) -> None:
    x = torch.randn(6, 3, dtype=dtype)
    y = torch.randn(4, 3, dtype=dtype) + 0.5  # n != m
    got = mmd(x, y, sigmas=sigmas, unbiased=unbiased)
    assert got.dtype == dtype and got.shape == ()
    assert got.item() == pytest.approx(naive_mmd(x, y, sigmas, unbiased), **approx_tol(dtype))


def test_mmd_matches_sklearn_rbf_kernel() -> None:
    from sklearn.metrics.pairwise import rbf_kernel

    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randn(11, 5, dtype=torch.float64)
    xs, ys = x.numpy(), y.numpy()
    expected = 0.0
    for s in (0.7, 2.0):
        gamma = 1.0 / (2 * s * s)  # seed 004's exp(-gamma ||a - b||^2)
        expected += rbf_kernel(xs, xs, gamma=gamma).mean() + rbf_kernel(ys, ys, gamma=gamma).mean()
        expected -= 2 * rbf_kernel(xs, ys, gamma=gamma).mean()
    assert mmd(x, y, sigmas=(0.7, 2.0)).item() == pytest.approx(expected, rel=1e-10)


def test_mmd_known_answers_and_gradient() -> None:
    x = torch.randn(5, 3, dtype=torch.float64)
    assert mmd(x, x).item() == pytest.approx(0.0, abs=1e-12)
    # One point each: biased MMD^2 = 2 - 2 exp(-|a - b|^2 / 2).
    a, b = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert mmd(a, b).item() == pytest.approx(2 - 2 * math.exp(-12.5))
    # Duplicate rows (zero distances) keep the gradient finite.
    xg = torch.cat([x, x[:2]]).requires_grad_()
    mmd(xg, torch.randn(4, 3, dtype=torch.float64), sigmas=(1.0, 2.0), unbiased=True).backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_mmd_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"same feature dimension.*\(4, 3\).*\(4, 2\)"):
        mmd(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"unbiased MMD needs at least 2 samples.*\(1, 3\)"):
        mmd(torch.zeros(1, 3), torch.zeros(4, 3), unbiased=True)
    with pytest.raises(ValueError, match=r"x contains NaN or infinite values \(shape \(2, 3\)\)"):
        mmd(torch.tensor([[0.0, 1.0, math.inf], [0.0, 0.0, 0.0]]), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"sigmas"):
        mmd(torch.zeros(2, 3), torch.zeros(2, 3), sigmas=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"sigmas"):
        mmd(torch.zeros(2, 3), torch.zeros(2, 3), sigmas=())


# --------------------------------------------------------------------------
# KL
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_matches_torch_distributions(dtype: torch.dtype) -> None:
    from torch.distributions import Normal, kl_divergence

    mu_q, lv_q = torch.randn(4, 6, dtype=dtype), torch.randn(4, 6, dtype=dtype)
    mu_p, lv_p = torch.randn(4, 6, dtype=dtype), torch.randn(4, 6, dtype=dtype)
    expected = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    got = kl_diag_gaussians(mu_q, lv_q, mu_p, lv_p)
    assert got.shape == (4,)
    torch.testing.assert_close(got, expected, **tol(dtype))
    standard = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(torch.zeros_like(mu_q), torch.ones_like(mu_q)))
    torch.testing.assert_close(kl_diag_gaussians(mu_q, lv_q), standard.sum(-1), **tol(dtype))


def test_kl_naive_broadcast_and_defaults() -> None:
    mu_q, lv_q = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    mu_p, lv_p = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    got = kl_diag_gaussians(mu_q, lv_q, mu_p, lv_p)
    assert got.shape == (2, 3)
    for a in range(2):
        for b in range(3):
            ref = 0.0
            for k in range(4):
                vq, vp = math.exp(lv_q[a, b, k].item()), math.exp(lv_p[k].item())
                diff = mu_q[a, b, k].item() - mu_p[k].item()
                ref += 0.5 * (math.log(vp / vq) + (vq + diff**2) / vp - 1)
            assert got[a, b].item() == pytest.approx(ref, rel=1e-10)
    # Only the mean of p given: unit variance is assumed.
    torch.testing.assert_close(
        kl_diag_gaussians(mu_q, lv_q, mu_p=mu_p), kl_diag_gaussians(mu_q, lv_q, mu_p, torch.zeros(4, dtype=torch.float64))
    )
    assert torch.equal(kl_diag_gaussians(mu_q, lv_q, mu_q, lv_q), torch.zeros(2, 3, dtype=torch.float64))


def test_kl_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"do not broadcast: mu_q \(2, 3\), logvar_q \(2, 4\)"):
        kl_diag_gaussians(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"logvar_p contains NaN"):
        kl_diag_gaussians(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.tensor([0.0, math.nan, 0.0]))


# --------------------------------------------------------------------------
# Wasserstein
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_wasserstein_matches_pot_bures(dtype: torch.dtype) -> None:
    from ot.gaussian import bures_wasserstein_distance

    mu1, lv1 = torch.randn(5, 4, dtype=dtype), torch.randn(5, 4, dtype=dtype)
    mu2, lv2 = torch.randn(5, 4, dtype=dtype), torch.randn(5, 4, dtype=dtype)
    got = wasserstein2_diag(mu1, lv1, mu2, lv2)
    assert got.shape == (5,) and got.dtype == dtype
    for i in range(5):
        c1 = np.diag(np.exp(lv1[i].double().numpy()))
        c2 = np.diag(np.exp(lv2[i].double().numpy()))
        w = bures_wasserstein_distance(mu1[i].double().numpy(), mu2[i].double().numpy(), c1, c2)
        assert got[i].item() == pytest.approx(float(w), rel=1e-5 if dtype == torch.float32 else 1e-7)


def test_wasserstein_naive_and_zero_distance_gradient() -> None:
    mu1, lv1 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    mu2, lv2 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    got = wasserstein2_diag(mu1, lv1, mu2, lv2)
    for i in range(3):
        sq = sum(
            (mu1[i, k].item() - mu2[i, k].item()) ** 2
            + (math.exp(lv1[i, k].item() / 2) - math.exp(lv2[i, k].item() / 2)) ** 2
            for k in range(2)
        )
        assert got[i].item() == pytest.approx(math.sqrt(sq), rel=1e-12)
    # Zero distance: exactly 0, with a finite (zero) gradient.
    mu = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    w = wasserstein2_diag(mu, lv, mu.detach().clone(), lv.detach().clone())
    assert torch.equal(w, torch.zeros(3, dtype=torch.float64))
    w.sum().backward()
    assert mu.grad is not None and lv.grad is not None
    assert torch.equal(mu.grad, torch.zeros_like(mu)) and torch.equal(lv.grad, torch.zeros_like(lv))
    # Away from zero, the gradient of a distance along the mean shift is a unit vector.
    m = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    wasserstein2_diag(m, torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2)).sum().backward()
    assert m.grad is not None
    torch.testing.assert_close(m.grad, torch.tensor([[-0.6, -0.8]], dtype=torch.float64))


def test_wasserstein_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"do not broadcast.*mu_2 \(2, 5\)"):
        wasserstein2_diag(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"logvar_1 contains NaN or infinite values \(shape \(2, 4\)\)"):
        wasserstein2_diag(torch.zeros(2, 4), torch.full((2, 4), -math.inf), torch.zeros(2, 4), torch.zeros(2, 4))


# --------------------------------------------------------------------------
# gradient reversal
# --------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.0, 0.37, 1.0, 2.5])
def test_grad_reverse_is_exactly_minus_scale_times_gradient(scale: float) -> None:
    w = torch.randn(4, 3)
    x = torch.randn(5, 4, requires_grad=True)
    (torch.tanh(x @ w) ** 2).sum().backward()
    assert x.grad is not None
    plain = x.grad.clone()
    x.grad = None
    y = grad_reverse(x, scale)
    assert torch.equal(y, x)
    (torch.tanh(y @ w) ** 2).sum().backward()
    assert torch.equal(x.grad, plain * (-scale))


def test_grad_reverse_rejects_bad_scale() -> None:
    with pytest.raises(ValueError, match=r"scale must be a finite number >= 0"):
        grad_reverse(torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match=r"scale"):
        grad_reverse(torch.zeros(2), math.nan)


def test_grl_schedule() -> None:
    assert grl_schedule(0.0) == 0.0
    assert grl_schedule(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_schedule(0.5) == pytest.approx(math.tanh(2.5))  # 2 sigmoid(z) - 1 = tanh(z / 2)
    values = [grl_schedule(p) for p in np.linspace(0, 1, 11)]
    assert all(a < b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match=r"p \(training progress\) must be in \[0, 1\], got 1.5"):
        grl_schedule(1.5)


# --------------------------------------------------------------------------
# contractive penalty
# --------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_contractive_penalty_matches_autograd_jacobian(activation: str) -> None:
    enc = torch.nn.Linear(6, 4).double()
    act = torch.sigmoid if activation == "sigmoid" else torch.tanh
    x = torch.randn(3, 6, dtype=torch.float64)
    h = act(enc(x))
    per_sample = contractive_penalty(h, enc.weight, activation=activation, reduction="none")  # type: ignore[arg-type]
    assert per_sample.shape == (3,)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: act(enc(v)), x[i])
        assert jac.shape == (4, 6)
        assert per_sample[i].item() == pytest.approx(jac.pow(2).sum().item(), rel=1e-12)
    mean = contractive_penalty(h, enc.weight, activation=activation)  # type: ignore[arg-type]
    assert mean.item() == pytest.approx(per_sample.mean().item(), rel=1e-12)
    total = contractive_penalty(h, enc.weight, activation=activation, reduction="sum")  # type: ignore[arg-type]
    assert total.item() == pytest.approx(per_sample.sum().item(), rel=1e-12)
    mean.backward()  # trains both W and b
    assert enc.weight.grad is not None and enc.bias.grad is not None


def test_contractive_penalty_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"weight must be \(H, D\).*h \(3, 4\) and weight \(5, 6\)"):
        contractive_penalty(torch.zeros(3, 4), torch.zeros(5, 6))
    with pytest.raises(ValueError, match=r"activation must be 'sigmoid' or 'tanh', got 'relu'"):
        contractive_penalty(torch.zeros(3, 4), torch.zeros(4, 6), activation="relu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"reduction"):
        contractive_penalty(torch.zeros(3, 4), torch.zeros(4, 6), reduction="max")  # type: ignore[arg-type]


def test_docstring_examples_run() -> None:
    import doctest

    import visem.losses

    result = doctest.testmod(visem.losses)
    assert result.attempted > 0 and result.failed == 0


def test_median_bandwidth_is_the_median_heuristic_and_scale_free() -> None:
    from visem.losses import median_bandwidth

    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0]])
    # pairwise squared distances (each ordered pair): 1, 9, 4 twice each; lower median 4 -> sigma sqrt(2)
    assert median_bandwidth(x, y) == pytest.approx(2.0 ** 0.5)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 8, generator=g), torch.randn(15, 8, generator=g)
    assert median_bandwidth(10 * a, 10 * b) == pytest.approx(10 * median_bandwidth(a, b))
    assert median_bandwidth(torch.ones(3, 2), torch.ones(2, 2)) == 1.0


def test_lsgan_loss_is_the_mean_squared_distance_to_the_target_label() -> None:
    from visem.losses import lsgan_loss

    pred = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
    naive_real = sum((float(v) - 1.0) ** 2 for v in pred.flatten()) / pred.numel()
    naive_fake = sum(float(v) ** 2 for v in pred.flatten()) / pred.numel()
    assert float(lsgan_loss(pred, real=True)) == pytest.approx(naive_real)
    assert float(lsgan_loss(pred, real=False)) == pytest.approx(naive_fake)
