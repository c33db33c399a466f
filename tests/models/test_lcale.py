"""LCALE, CADA-VAE and DCCA: loss terms by hand, Algorithm 1's alternation, a known retrieval problem."""

import copy

import numpy as np
import pytest
import torch

from visem.data.synthetic import synthetic_pairs
from visem.experiments.zscmr import cmr_metrics, make_cmr_split, train_cmr
from visem.models import build_model
from visem.models.cmr import cross_modal_map
from visem.models.dcca import dcca_correlation
from visem.train.trainer import TrainConfig

DIMS = {"image_dim": 6, "text_dim": 5, "class_dim": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(n, 6, generator=g, dtype=torch.float64),
        "text": torch.randn(n, 5, generator=g, dtype=torch.float64),
        "label": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])[:n],
        "class_emb": torch.randn(3, 4, generator=g, dtype=torch.float64),
    }


def _np(t):
    return t.detach().numpy()


def _kl(mu, lv):
    return 0.5 * (np.exp(lv) + mu**2 - 1 - lv).sum(-1)


def _w2(mu1, lv1, mu2, lv2):
    return np.sqrt(((mu1 - mu2) ** 2).sum(-1) + ((np.exp(lv1 / 2) - np.exp(lv2 / 2)) ** 2).sum(-1))


def _mmd(x, y, sigmas):
    def k(a, b):
        d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * s * s)) for s in sigmas)

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_lcale_loss_terms_by_hand():
    torch.manual_seed(0)
    cfg = {"latent_dim": 3, "hidden": [7], "reg_hidden": [5], "alpha": 0.9, "beta": 0.3, "lam": 0.2, "gamma": 0.05,
           "mmd_sigmas": [1.5], "mmd_bandwidth": "fixed", "reduction": "sum"}
    model = build_model("lcale", cfg, dims=DIMS).double().eval()  # eval: z = mu, deterministic
    b = _batch()
    terms = model.loss(b)
    xs = {"v": _np(b["image"]), "t": _np(b["text"]), "c": _np(b["class_emb"][b["label"]])}
    vaes = {"v": model.vae_v, "t": model.vae_t, "c": model.vae_c}
    st = {m: [_np(a) for a in vaes[m].encode(torch.tensor(xs[m]))] for m in xs}
    dec = lambda n, z: _np(vaes[n].decoder(torch.tensor(z)))  # noqa: E731
    sq = lambda a, b_: ((a - b_) ** 2).sum(-1).mean()  # noqa: E731
    vae = sum(sq(xs[m], dec(m, st[m][0])) + _kl(*st[m]).mean() for m in xs)
    cr = sum(sq(xs[n], dec(n, st[m][0])) for m in xs for n in xs if n != m)
    ca1 = (_w2(*st["v"], *st["c"]) + _w2(*st["t"], *st["c"])).mean()
    ca2 = _mmd(st["v"][0], st["t"][0], [1.5])
    rv = _np(model.reg_v(torch.tensor(dec("v", st["v"][0]))))
    rt = _np(model.reg_t(torch.tensor(dec("t", st["t"][0]))))
    cyc = sq(xs["c"], rv) + sq(xs["c"], rt)
    for key, want in [("vae", vae), ("cr", cr), ("ca1", ca1), ("ca2", ca2), ("cyc", cyc)]:
        assert terms[key].item() == pytest.approx(want, rel=1e-9), key
    total = vae + 0.9 * cr + 0.3 * ca1 + 0.2 * ca2 + 0.05 * cyc
    assert terms["loss"].item() == pytest.approx(total, rel=1e-9)
    # the default reading: squared errors and KL averaged over their dimensions, MMD at the median bandwidth
    mean = build_model("lcale", {**cfg, "reduction": "mean", "mmd_bandwidth": "median"}, dims=DIMS).double().eval()
    mean.load_state_dict(model.state_dict())
    mt = mean.loss(b)
    sq_m = lambda a, b_: ((a - b_) ** 2).mean(-1).mean()  # noqa: E731
    vae_m = sum(sq_m(xs[m], dec(m, st[m][0])) + _kl(*st[m]).mean() / 3 for m in xs)
    z = np.concatenate([st["v"][0], st["t"][0]])
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    off = np.sort(d2[~np.eye(len(z), dtype=bool)])
    sigma = np.sqrt(off[(len(off) - 1) // 2] / 2)  # Gretton's median heuristic (the lower median)
    assert mt["vae"].item() == pytest.approx(vae_m, rel=1e-9)
    assert mt["ca1"].item() == pytest.approx(ca1, rel=1e-9)  # a distance: not reduced over dimensions
    assert mt["ca2"].item() == pytest.approx(_mmd(st["v"][0], st["t"][0], [1.5 * sigma]), rel=1e-9)


@pytest.mark.parametrize("switch,term", [("use_cr", "cr"), ("use_ca1", "ca1"), ("use_ca2", "ca2"), ("use_cyc", "cyc")])
def test_lcale_ablation_switch_removes_its_term(switch, term):
    torch.manual_seed(0)
    full = build_model("lcale", {}, dims=DIMS).double().eval()
    abl = build_model("lcale", {switch: False}, dims=DIMS).double().eval()
    abl.load_state_dict(full.state_dict())
    b = _batch()
    t_full, t_abl = full.loss(b), abl.loss(b)
    assert term not in t_abl and t_full[term].item() > 0.0
    weight = {"cr": 1.0, "ca1": 0.1, "ca2": 0.1, "cyc": 0.01}[term]
    assert t_abl["loss"].item() == pytest.approx(t_full["loss"].item() - weight * t_full[term].item(), rel=1e-9)


def test_lcale_train_step_is_algorithm_1():
    """Encoders step on grad(Eq. 9); decoders on grad(Eq. 9) after that; regressors on grad(gamma L_CYC)."""
    torch.manual_seed(0)
    model = build_model("lcale", {"latent_dim": 3, "reduction": "sum"}, dims=DIMS).double().eval()
    ref = copy.deepcopy(model)
    b = _batch()
    lr = 1e-3
    opts = model.make_optimizers(lr)
    model.train_step(b, opts)

    def grads(m, which, loss_fn):
        m.zero_grad(set_to_none=True)
        loss_fn(m).backward()
        enc, dec, reg = m._groups()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in {"e": enc, "d": dec, "r": reg}[which]]

    # Adam's first step moves each parameter by lr * sign(grad) (up to eps)
    def step(m, which, gs):
        with torch.no_grad():
            for p, g in zip(m._groups()["edr".index(which)], gs):
                p -= lr * g / (g.abs() + 1e-8)

    total = lambda m: m.loss(b)["loss"]  # noqa: E731
    step(ref, "e", grads(ref, "e", total))
    step(ref, "d", grads(ref, "d", total))
    def cyc(m):
        xc = b["class_emb"][b["label"]]
        dv = m.vae_v.decoder(m.vae_v.encode(b["image"])[0])
        dt = m.vae_t.decoder(m.vae_t.encode(b["text"])[0])
        return 0.01 * (((xc - m.reg_v(dv)) ** 2).sum(-1).mean() + ((xc - m.reg_t(dt)) ** 2).sum(-1).mean())

    step(ref, "r", grads(ref, "r", cyc))
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-9, msg=name)


def test_lcale_without_cycle_leaves_regressors_alone():
    torch.manual_seed(0)
    model = build_model("lcale", {"use_cyc": False}, dims=DIMS)
    before = [p.clone() for p in model._groups()[2]]
    model.train_step({k: v.float() if v.is_floating_point() else v for k, v in _batch().items()},
                     model.make_optimizers(1e-2))
    assert all(torch.equal(a, p) for a, p in zip(before, model._groups()[2]))


def test_cada_vae_loss_by_hand():
    torch.manual_seed(0)
    model = build_model("cada-vae", {"latent_dim": 3}, dims={"image_dim": 6, "class_dim": 4}).double().eval()
    b = _batch()
    progress = 0.5
    terms = model.loss(b, progress)
    xv, xs = _np(b["image"]), _np(b["class_emb"][b["label"]])
    mv, lvv = (_np(a) for a in model.vae_v.encode(b["image"]))
    ms, lvs = (_np(a) for a in model.vae_s.encode(torch.tensor(xs)))
    dv = lambda z: _np(model.vae_v.decoder(torch.tensor(z)))  # noqa: E731
    ds = lambda z: _np(model.vae_s.decoder(torch.tensor(z)))  # noqa: E731
    rec = (np.abs(xv - dv(mv)).sum(-1) + np.abs(xs - ds(ms)).sum(-1)).mean()
    kl = (_kl(mv, lvv) + _kl(ms, lvs)).mean()
    cr = (np.abs(xv - dv(ms)).sum(-1) + np.abs(xs - ds(mv)).sum(-1)).mean()
    da = _w2(mv, lvv, ms, lvs).mean()
    # warm-ups at progress 0.5: KL 0.25 * 0.5 / 0.93, CR 2.37 * 0.29 / 0.54, DA 8.13 (done)
    f_kl, f_cr, f_da = 0.25 * 0.5 / 0.93, 2.37 * 0.29 / 0.54, 8.13
    for key, want in [("rec", rec), ("kl", kl), ("cr", cr), ("da", da)]:
        assert terms[key].item() == pytest.approx(want, rel=1e-9), key
    assert terms["loss"].item() == pytest.approx(rec + f_kl * kl + f_cr * cr + f_da * da, rel=1e-9)


def test_dcca_correlation_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 2))
    h1 = np.c_[z, rng.standard_normal((50, 1))] + 0.3 * rng.standard_normal((50, 3))
    h2 = np.c_[z @ [[1.0, 0.5], [0.0, 1.0]], rng.standard_normal((50, 1))] + 0.3 * rng.standard_normal((50, 3))
    reg = 1e-3

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w**-0.5) @ v.T

    a, bb = h1 - h1.mean(0), h2 - h2.mean(0)
    s11 = a.T @ a / 49 + reg * np.eye(3)
    s22 = bb.T @ bb / 49 + reg * np.eye(3)
    t = inv_sqrt(s11) @ (a.T @ bb / 49) @ inv_sqrt(s22)
    want = np.linalg.svd(t, compute_uv=False).sum()
    got = dcca_correlation(torch.tensor(h1), torch.tensor(h2), reg)
    assert got.item() == pytest.approx(want, rel=1e-9)
    # the canonical projections decorrelate the views: cross-covariance = diag(singular values)
    _, p1, p2, m1, m2 = dcca_correlation(torch.tensor(h1), torch.tensor(h2), reg, return_maps=True)
    c = ((torch.tensor(h1) - m1) @ p1).T @ ((torch.tensor(h2) - m2) @ p2) / 49
    np.testing.assert_allclose(c.numpy(), np.diag(np.linalg.svd(t, compute_uv=False)), atol=1e-9)


def test_cross_modal_map_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    out = cross_modal_map(img, txt, torch.tensor([0, 1]), torch.tensor([0, 1, 1]), k=2)
    # i2t: image 0 ranks txt 0 (rel), 2, 1 -> AP 1; image 1 ranks 1 (rel), 2 (rel), 0 -> AP 1
    assert out["i2t_map"] == pytest.approx(1.0)
    # t2i: txt 0 -> img 0 first: 1; txt 1 -> img 1 first: 1; txt 2 -> img 0 (0.6) then img 1: AP 1/2
    assert out["t2i_map"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert out["avg_map"] == pytest.approx((1 + 2.5 / 3) / 2)
    # P@2: i2t (1/2 + 2/2) / 2; t2i every query has one relevant image in 2: 1/2
    assert out["p_at_100"] == pytest.approx(((0.5 + 1.0) / 2 + 0.5) / 2)


@pytest.fixture(scope="module")
def cmr_split():
    d = synthetic_pairs(n_classes=20, per_class=30, image_dim=32, text_dim=16, class_dim=8, noise=0.1, seed=0)
    return make_cmr_split(d["image"], d["text"], d["label"], d["class_emb"], 0.25, seed=0)


@pytest.mark.parametrize("name,params,lr", [("lcale", {}, 1e-3), ("cada-vae-cmr", {}, 1e-3),
                                            ("dcca", {"out_dim": 8}, 1e-3), ("devise-cmr", {}, 1e-2)])
def test_models_beat_chance_on_unseen_class_retrieval(cmr_split, name, params, lr):
    train = TrainConfig(steps=200, batch_size=64, lr=lr, seed=0, log_every=100, checkpoint_every=10**9,
                        progress=False)
    model, shares = train_cmr(name, params, cmr_split, train)
    m = cmr_metrics(model, cmr_split)
    assert set(shares) == {"start", "end"} and sum(shares["end"].values()) == pytest.approx(1.0)
    # 5 unseen classes of equal size: a random ranking has MAP about 0.2
    assert m["avg_map"] > 0.45, m
