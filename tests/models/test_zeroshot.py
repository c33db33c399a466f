"""ReViSE, DeViSE, ESZSL and SAE: loss terms by hand, closed forms by numpy, a known zero-shot problem."""

import numpy as np
import pytest
import torch

from visem.data.synthetic import synthetic_pairs
from visem.experiments.zsl import make_zsl_split, train_zsl, zsl_metrics
from visem.models import build_model
from visem.models.zeroshot import class_hinge_loss, eszsl_solve, sae_solve, sylvester_solve
from visem.train.trainer import TrainConfig


pytestmark = pytest.mark.usefixtures("one_thread")


def test_class_hinge_loss_by_hand():
    scores = torch.tensor([[0.5, 0.3, 0.45], [0.0, 1.0, 0.95]])
    label = torch.tensor([0, 2])
    m = 0.1
    # sample 0: class 1 -> [0.1 - 0.5 + 0.3]+ = 0, class 2 -> [0.1 - 0.5 + 0.45]+ = 0.05
    # sample 1: class 0 -> [0.1 - 0.95 + 0]+ = 0, class 1 -> [0.1 - 0.95 + 1.0]+ = 0.15
    assert class_hinge_loss(scores, label, m).item() == pytest.approx((0.05 + 0.15) / 2)
    with pytest.raises(ValueError, match="label values"):
        class_hinge_loss(scores, torch.tensor([0, 3]), m)


def _problem(n=30, d=6, c=4, a=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.integers(0, c, n)
    s = rng.standard_normal((c, a))
    return x, y, s


def test_eszsl_closed_form_matches_numpy_and_is_stationary():
    x, y, s = _problem()
    gamma, lam = 0.7, 0.3
    yy = 2.0 * np.eye(4)[y] - 1.0
    ref = np.linalg.inv(x.T @ x + gamma * np.eye(6)) @ x.T @ yy @ s @ np.linalg.inv(s.T @ s + lam * np.eye(3))
    v = eszsl_solve(torch.tensor(x), torch.tensor(yy), torch.tensor(s), gamma, lam)
    np.testing.assert_allclose(v.numpy(), ref, rtol=1e-9, atol=1e-10)

    model = build_model("eszsl", {"gamma": gamma, "lam": lam}, dims={"image_dim": 6, "class_dim": 3})
    batch = {"image": torch.tensor(x), "label": torch.tensor(y), "class_emb": torch.tensor(s)}
    model.double()
    model.finalize(batch)
    np.testing.assert_allclose(model.V.detach().numpy(), ref, rtol=1e-9, atol=1e-10)
    model.loss(batch)["loss"].backward()
    assert model.V.grad.abs().max().item() < 1e-8  # the closed form minimises the loss


def test_sae_closed_form_matches_kronecker_solve_and_is_stationary():
    x, y, s = _problem(n=40)
    lam = 0.5
    sy = s[y]  # (N, k)
    a, b, c = sy.T @ sy, lam * x.T @ x, (1 + lam) * sy.T @ x  # A W + W B = C, W (k, d)
    k, d = c.shape
    # vec(A W + W B) = (I_d kron A + B^T kron I_k) vec(W), column-major vec
    big = np.kron(np.eye(d), a) + np.kron(b.T, np.eye(k))
    ref = np.linalg.solve(big, c.flatten(order="F")).reshape((k, d), order="F")
    w = sae_solve(torch.tensor(x), torch.tensor(sy), lam)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-8, atol=1e-10)

    model = build_model("sae", {"lam": lam}, dims={"image_dim": 6, "class_dim": 3}).double()
    batch = {"image": torch.tensor(x), "label": torch.tensor(y), "class_emb": torch.tensor(s)}
    model.finalize(batch)
    model.loss(batch)["loss"].backward()
    assert model.W.grad.abs().max().item() < 1e-8


def test_sylvester_solve_general():
    rng = np.random.default_rng(3)
    p, q = rng.standard_normal((4, 4)), rng.standard_normal((5, 5))
    a, b, c = p @ p.T + 0.1 * np.eye(4), q @ q.T, rng.standard_normal((4, 5))
    w = sylvester_solve(torch.tensor(a), torch.tensor(b), torch.tensor(c)).numpy()
    np.testing.assert_allclose(a @ w + w @ b, c, atol=1e-9)


def test_devise_loss_by_hand():
    model = build_model("devise", {"margin": 0.2}, dims={"image_dim": 3, "class_dim": 2})
    with torch.no_grad():
        model.proj.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    batch = {"image": torch.tensor([[1.0, 0.0, 5.0]]), "label": torch.tensor([0]),
             "class_emb": torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.6, 0.8]])}
    # M x = (1, 0); unit class vectors give scores 1, 0, 0.6
    expected = max(0, 0.2 - 1 + 0) + max(0, 0.2 - 1 + 0.6)
    assert model.loss(batch)["loss"].item() == pytest.approx(expected)


def _gauss_mmd(x, y, sigmas):
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * s * s)) for s in sigmas)

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_revise_loss_terms_by_hand():
    torch.manual_seed(0)
    cfg = {"code_dim": 4, "margin": 0.3, "rec_weight": 0.5, "contractive_weight": 0.2, "mmd_weight": 0.7,
           "mmd_sigmas": [1.0, 2.0], "adapt_weight": 0.4, "adapt_start": 0.5}
    model = build_model("revise", cfg, dims={"image_dim": 5, "class_dim": 3}).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    u = torch.randn(4, 5, generator=g, dtype=torch.float64)
    s = torch.randn(3, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    batch = {"image": x, "label": y, "class_emb": s, "unlabeled": u}
    terms = model.loss(batch, progress=0.6)

    P = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    X, U, S = x.numpy(), u.numpy(), s.numpy()
    hv = sig(X @ P["enc_v.weight"].T + P["enc_v.bias"])
    hu = sig(U @ P["enc_v.weight"].T + P["enc_v.bias"])
    ht = sig(S @ P["enc_t.weight"].T + P["enc_t.bias"])
    rec_v = ((hv @ P["dec_v.weight"].T + P["dec_v.bias"] - X) ** 2).mean()
    rec_t = ((ht @ P["dec_t.weight"].T + P["dec_t.bias"] - S) ** 2).mean()
    # Jacobian of sigmoid(W x + b) is diag(h (1 - h)) W; its squared Frobenius norm, batch mean
    contr = np.mean([np.sum((np.diag(h * (1 - h)) @ P["enc_v.weight"]) ** 2) for h in hv])

    def hinge(scores, labels):
        tot = 0.0
        for i, c in enumerate(labels):
            tot += sum(max(0.0, 0.3 - scores[i, c] + scores[i, j]) for j in range(scores.shape[1]) if j != c)
        return tot / len(labels)

    sup = hinge(hv @ ht.T, y.numpy())
    pseudo = (hu @ ht.T).argmax(1)
    adapt = hinge(hu @ ht.T, pseudo)
    mmd = _gauss_mmd(np.concatenate([hv, hu]), ht, [1.0, 2.0])
    for key, want in [("rec_v", rec_v), ("rec_t", rec_t), ("contractive", contr), ("sup", sup),
                      ("adapt", adapt), ("mmd", mmd)]:
        assert terms[key].item() == pytest.approx(want, rel=1e-9, abs=1e-12), key
    total = sup + 0.5 * (rec_v + rec_t) + 0.2 * contr + 0.7 * mmd + 0.4 * adapt
    assert terms["loss"].item() == pytest.approx(total, rel=1e-9)

    # before adapt_start the adaptation term is off
    assert model.loss(batch, progress=0.4)["adapt"].item() == 0.0


def test_revise_adaptation_relabels_only_unlabelled_images():
    torch.manual_seed(0)
    model = build_model("revise", {"code_dim": 4}, dims={"image_dim": 5, "class_dim": 3})
    x = torch.randn(10, 5)
    s = torch.randn(3, 3)
    given = torch.tensor([2, 2, 2, 2, 2, -1, -1, -1, -1, -1])
    pred = (model.embed_image(x) @ model.embed_class(s).T).argmax(1)
    out = model.pseudo_labels(x, given, s)
    assert torch.equal(out[:5], given[:5])  # labelled images keep their labels
    assert torch.equal(out[5:], pred[5:])  # unlabelled ones get the model's prediction
    only = torch.tensor([False, True, True])
    out = model.pseudo_labels(x, given, s, candidates=only)
    assert torch.equal(out[:5], given[:5])
    assert bool((out[5:] > 0).all())  # restricted to the candidate classes


def test_revise_adaptation_only_acts_through_unlabelled_data():
    torch.manual_seed(0)
    base = build_model("revise", {"code_dim": 4, "adapt_weight": 1.0, "adapt_start": 0.0},
                       dims={"image_dim": 5, "class_dim": 3})
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(6, 5, generator=g), "label": torch.tensor([0, 1, 2, 0, 1, 2]),
             "class_emb": torch.randn(3, 3, generator=g)}
    # without unlabelled images the adaptation term is exactly zero
    assert base.loss(batch, 1.0)["adapt"].item() == 0.0
    with_u = base.loss({**batch, "unlabeled": torch.randn(4, 5, generator=g)}, 1.0)
    assert with_u["adapt"].item() > 0.0


# --------------------------------------------------------------------------
# a known zero-shot problem: class vectors map linearly onto image clusters
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zsl_split():
    d = synthetic_pairs(n_classes=20, per_class=30, image_dim=32, text_dim=16, class_dim=8, noise=0.1, seed=0)
    return make_zsl_split(d["image"], d["label"], d["class_emb"], list(range(15, 20)), seed=0)


@pytest.mark.parametrize(
    "name,params,steps,transductive",
    [
        ("eszsl", {}, 0, False),
        ("sae", {}, 0, False),
        ("devise", {}, 200, False),
        ("revise", {}, 200, False),
        ("revise", {"adapt_weight": 1.0}, 200, True),
        ("cada-vae", {"cls_epochs": 5}, 200, False),
    ],
)
def test_models_beat_chance_on_unseen_classes(zsl_split, name, params, steps, transductive):
    n = torch.get_num_threads()
    train = TrainConfig(steps=steps, batch_size=64, lr=3e-3, seed=0, log_every=100, checkpoint_every=10**9,
                        progress=False)
    model = train_zsl(name, params, zsl_split, train, transductive=transductive)
    m = zsl_metrics(model, zsl_split)
    chance = 100.0 / 5
    assert m["unseen_accuracy"] > 2.5 * chance, m  # 5 unseen classes: chance is 20%
    assert torch.get_num_threads() == n
