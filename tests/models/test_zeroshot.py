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
    assert class_hinge_loss(scores, label, m, reduction="sum").item() == pytest.approx(0.05 + 0.15)
    # ranked against classes 0 and 2 only, class 1 is no negative: sample 1 costs 0
    only = torch.tensor([True, False, True])
    assert class_hinge_loss(scores, label, m, candidates=only, reduction="sum").item() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="label values"):
        class_hinge_loss(scores, torch.tensor([0, 3]), m)
    with pytest.raises(ValueError, match="candidate"):
        class_hinge_loss(scores, torch.tensor([0, 1]), m, candidates=only)


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


def _sig(a):
    return 1 / (1 + np.exp(-a))


def _revise_by_hand(P, X, U, S, y, lab, cand, mean, scale, reduce, margin, sigmas):
    """ReViSE's terms with numpy loops: ``reduce`` is "sum" (the paper reading) or "mean"."""
    agg = np.sum if reduce == "sum" else np.mean
    S2 = (S - mean) / scale
    XV = np.concatenate([X, U])
    h = _sig(XV @ P["enc_v.weight"].T + P["enc_v.bias"])
    ht = _sig(S2 @ P["enc_t.weight"].T + P["enc_t.bias"])
    rec_v = agg([agg((h[i] @ P["dec_v.weight"].T + P["dec_v.bias"] - XV[i]) ** 2) for i in range(len(XV))])
    err_t = [agg((ht[c] @ P["dec_t.weight"].T + P["dec_t.bias"] - S2[c]) ** 2) for c in range(len(S))]
    rec_t = agg([err_t[c] for c in y])
    # Jacobian of sigmoid(W x + b) is diag(h (1 - h)) W; its squared Frobenius norm per image
    contr = agg([np.sum((np.diag(hi * (1 - hi)) @ P["enc_v.weight"]) ** 2) for hi in h])

    def hinge(scores, labels, allowed):
        per = [sum(max(0.0, margin - scores[i, c] + scores[i, j]) for j in allowed if j != c)
               for i, c in enumerate(labels)]
        return agg(per)

    hv, hu = h[: len(X)], h[len(X):]
    sup = hinge(hv @ ht.T, y, [j for j in range(len(S)) if lab[j]])
    su = hu @ ht.T
    cands = [j for j in range(len(S)) if cand[j]]
    pseudo = [cands[int(np.argmax(su[i, cands]))] for i in range(len(U))]
    adapt = hinge(su, pseudo, cands)
    mmd = _gauss_mmd(h, ht, sigmas)
    return {"rec_v": rec_v, "rec_t": rec_t, "contractive": contr, "sup": sup, "adapt": adapt, "mmd": mmd}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_revise_loss_terms_by_hand(reduction):
    torch.manual_seed(0)
    cfg = {"code_dim": 4, "margin": 0.3, "rec_weight": 0.5, "contractive_weight": 0.2, "mmd_weight": 0.7,
           "mmd_sigmas": [1.0, 2.0], "adapt_weight": 0.4, "adapt_start": 0.5, "reduction": reduction}
    model = build_model("revise", cfg, dims={"image_dim": 5, "class_dim": 3}).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    u = torch.randn(4, 5, generator=g, dtype=torch.float64)
    s = 3.0 + 0.2 * torch.randn(5, 3, generator=g, dtype=torch.float64)  # far from 0, small spread
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    lab = torch.tensor([True, True, True, False, False])  # the transductive batch: classes 3, 4 are unseen
    cand = ~lab
    model.prepare({"class_emb": s, "labeled_classes": lab})
    mean = s[:3].mean(0).numpy()
    scale = float(np.sqrt(((s[:3].numpy() - mean) ** 2).mean()))
    assert np.allclose(model.side_mean.numpy(), mean) and model.side_scale.item() == pytest.approx(scale)
    batch = {"image": x, "label": y, "class_emb": s, "unlabeled": u, "labeled_classes": lab,
             "unlabeled_classes": cand}
    terms = model.loss(batch, progress=0.6)
    P = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    want = _revise_by_hand(P, x.numpy(), u.numpy(), s.numpy(), y.numpy(), lab.numpy(), cand.numpy(), mean, scale,
                           reduction, 0.3, [1.0, 2.0])
    for key, value in want.items():
        assert terms[key].item() == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert want["adapt"] > 0  # the check compares something
    total = want["sup"] + 0.5 * (want["rec_v"] + want["rec_t"]) + 0.2 * want["contractive"] + 0.7 * want["mmd"] \
        + 0.4 * want["adapt"]
    assert terms["loss"].item() == pytest.approx(total, rel=1e-9)
    # before adapt_start the adaptation term is off (weight 0)
    obj = model.objective(batch, progress=0.4)
    assert obj.weight("adapt") == 0.0 and obj.total.item() == pytest.approx(total - 0.4 * want["adapt"], rel=1e-9)


def test_revise_labelled_images_never_rank_against_unseen_classes():
    """Transductive batches: the unseen classes' side information cannot change the supervised hinge."""
    torch.manual_seed(0)
    model = build_model("revise", {"code_dim": 4}, dims={"image_dim": 5, "class_dim": 3})
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 3, generator=g)
    lab = torch.tensor([True, True, True, False, False])
    batch = {"image": torch.randn(8, 5, generator=g), "label": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
             "class_emb": s, "labeled_classes": lab}
    moved = {**batch, "class_emb": torch.cat([s[:3], s[3:] + 100.0 * torch.randn(2, 3, generator=g)])}
    a, b = model.loss(batch), model.loss(moved)
    assert a["sup"].item() == b["sup"].item() and a["rec_t"].item() == b["rec_t"].item()
    assert a["mmd"].item() != b["mmd"].item()  # the unseen class codes do enter the MMD
    everyone = model.loss({**moved, "labeled_classes": torch.ones(5, dtype=torch.bool)})
    assert everyone["sup"].item() != b["sup"].item()  # with every class as a negative they would count


def test_revise_unlabelled_images_train_the_visual_autoencoder():
    torch.manual_seed(0)
    model = build_model("revise", {"code_dim": 4}, dims={"image_dim": 5, "class_dim": 3})
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(6, 5, generator=g), "label": torch.tensor([0, 1, 2, 0, 1, 2]),
             "class_emb": torch.randn(3, 3, generator=g)}
    u = torch.randn(4, 5, generator=g, requires_grad=True)
    obj = model.objective({**batch, "unlabeled": u})
    for key in ("rec_v", "contractive"):
        (grad,) = torch.autograd.grad(obj.terms[key], u, retain_graph=True)
        assert grad.abs().sum() > 0, key
    # and add to the terms of the labelled batch alone
    alone = model.objective(batch).terms
    for key in ("rec_v", "contractive"):
        assert obj.terms[key].item() > alone[key].item(), key


def test_revise_side_information_is_standardised_on_the_training_classes_only():
    model = build_model("revise", {"code_dim": 4}, dims={"image_dim": 5, "class_dim": 3})
    s = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [50.0, 50.0, 50.0]])
    assert torch.equal(model._side(s), s)  # before prepare: as given
    model.prepare({"class_emb": s, "labeled_classes": torch.tensor([True, True, False])})
    assert torch.allclose(model.side_mean, torch.tensor([2.0, 2.0, 2.0]))
    assert model.side_scale.item() == pytest.approx(np.sqrt(4 / 6))  # rms of the centred seen rows
    off = build_model("revise", {"code_dim": 4, "standardize_side": False}, dims={"image_dim": 5, "class_dim": 3})
    off.prepare({"class_emb": s})
    assert torch.equal(off._side(s), s)


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


def test_revise_rejects_bad_masks():
    model = build_model("revise", {"code_dim": 4}, dims={"image_dim": 5, "class_dim": 3})
    batch = {"image": torch.randn(2, 5), "label": torch.tensor([0, 1]), "class_emb": torch.randn(3, 3)}
    with pytest.raises(ValueError, match=r"labeled_classes must be a \(3,\) bool mask"):
        model.loss({**batch, "labeled_classes": torch.tensor([True, True])})
    with pytest.raises(ValueError, match="unlabeled must be"):
        model.loss({**batch, "unlabeled": torch.randn(2, 4)})


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


# --------------------------------------------------------------------------
# a planted-signal Xian-layout data set every zero-shot recognition model must solve
# --------------------------------------------------------------------------
def _planted_xian(folder, xian_writer, dim=128, seed=0):
    """16 classes, 3 unseen (3, 9, 14), 30 images each, in the layout of Xian et al.'s releases.

    Side information as Xian et al. release it: non-negative attributes (85 of them, of rank 8),
    l2-normalised per class, so entries lie near 0.1. Image features as a CNN gives them:
    ``ReLU(att W) + noise`` (``dim``-d). Every class is a fixed function of its attributes, so
    the unseen classes can all be recognised: the ceiling is 100% (chance 33%). The earlier
    ReViSE (batch-mean terms, MMD over raw attribute codes, unseen classes as negatives of the
    labelled images) stayed at 33.3% transductively here, with and without the adaptation.
    """
    rng = np.random.default_rng(seed)
    n_classes, per_class = 16, 30
    att = (rng.random((n_classes, 8)) ** 2) @ rng.random((8, 85))
    att /= np.linalg.norm(att, axis=1, keepdims=True)
    w = 3.0 * rng.standard_normal((85, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    feats = np.maximum(att[labels] @ w, 0.0)
    feats = feats + 0.3 * rng.standard_normal(feats.shape)
    rows = np.arange(labels.size)
    unseen = np.isin(labels, [3, 9, 14])
    seen_rows = rows[~unseen]
    splits = {"trainval": np.setdiff1d(seen_rows, seen_rows[::5]), "test_seen": seen_rows[::5],
              "test_unseen": rows[unseen]}
    return xian_writer(folder, feats, labels, att, splits, names=[f"class{i}" for i in range(n_classes)])


def test_every_zero_shot_recognition_model_solves_a_planted_xian_benchmark(tmp_path, xian_writer):
    from visem.experiments.benchmarks import run_xian
    from visem.experiments.zsl import _ZSL_RUNS, run_zsl_models
    from visem.models.cmr import CrossModalModel
    from visem.models.registry import list_models
    from visem.models.zeroshot import ZeroShotModel

    # the table's models are every registered zero-shot recognition model: a new one is run here too
    recognition = {s.name for s in list_models("zeroshot")
                   if issubclass(s.cls, ZeroShotModel) and not issubclass(s.cls, CrossModalModel)}
    assert recognition == {m for m, *_ in _ZSL_RUNS}
    folder = _planted_xian(tmp_path / "PLANTED", xian_writer)
    res = run_xian(folder, steps=600)
    rows = {(r["model"], r["setting"]): r for r in res["rows"]}
    assert set(rows) == {(m, s) for m, s, _, _, k in _ZSL_RUNS if not k} | {("random", "floor")}
    for key, r in rows.items():
        if key != ("random", "floor"):
            assert r["unseen_accuracy"] >= 90.0, (key, r)  # ceiling 100, chance 33
    assert rows[("random", "floor")]["unseen_accuracy"] < 60.0
    # few-shot: 5 shots of each unseen class, both protocols' models
    from visem.data import load
    from visem.experiments.zsl import _ZSL_PARAMS, ZSLSplit, standardize_zsl
    from visem.train.trainer import TrainConfig

    d = load("xian", path=folder)
    x, y, s = (torch.from_numpy(np.asarray(a)) for a in (d.features, d.labels, d.attributes))
    tr, ts, tu = (torch.from_numpy(d.splits[k]) for k in ("trainval", "test_seen", "test_unseen"))
    split = standardize_zsl(ZSLSplit(x[tr], y[tr], x[ts], y[ts], x[tu], y[tu], s.float(),
                                     torch.from_numpy(d.seen_classes), torch.from_numpy(d.unseen_classes)))
    train = TrainConfig(steps=600, batch_size=128, lr=1e-3, log_every=10**9, checkpoint_every=10**9, progress=False)
    shots = [r for r in _ZSL_RUNS if r[4] == 5]
    assert {r[0] for r in shots} == {"revise", "cada-vae"}
    res = run_zsl_models(split, train, _ZSL_PARAMS, {}, runs=shots)
    for model, setting, m in res["metrics"][:-1]:
        assert m["unseen_accuracy"] >= 90.0, (model, setting, m)


# --------------------------------------------------------------------------
# no weighted term is switched off at the default config on zsl-fashion-mnist's data
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fashion_split():
    from visem.data.paths import DataError
    from visem.experiments.zsl import _image_features, make_zsl_split, mnist_subset, standardize_zsl

    try:
        from visem.features import compute_features

        class_emb = compute_features("fashion-mnist", "glove-classes").array.astype(np.float32)
        data = mnist_subset("fashion-mnist", 200, 100, seed=0)
    except (DataError, ImportError, FileNotFoundError) as exc:
        pytest.skip(f"fashion-mnist data not available: {exc}")
    x_tr, x_te = _image_features("fashion-mnist", "pixels", data)
    unseen = np.sort(np.random.default_rng(0).choice(10, size=3, replace=False))  # split 0 of zsl-fashion-mnist
    return standardize_zsl(make_zsl_split(x_tr, data["train_labels"], class_emb, unseen, test_image=x_te,
                                          test_label=data["test_labels"]))


@pytest.mark.parametrize("name,setting", [("revise", "inductive"), ("revise", "transductive"),
                                          ("revise", "transductive-adapt"), ("cada-vae", "inductive"),
                                          ("devise", "inductive")])
def test_no_weighted_term_is_switched_off_at_the_default_config(fashion_split, name, setting):
    """Each weighted term carries >= 1% of the encoders' gradient half-way and at the end of training.

    Measured as ``zsl-fashion-mnist`` trains (its default settings, split 0, pixels). Two exceptions,
    both by construction rather than by scale (see the ReViSE docstring): at initialisation ReViSE's
    hinge carries most of the gradient (``start`` is not checked), and the adaptation hinge on the
    model's own predictions is zero whenever those predictions clear the margin.
    """
    from visem.experiments.zsl import _ZSL_PARAMS, _ZSL_RUNS, term_shares, zsl_defaults
    from visem.train.shares import low_share_terms

    _, _, extra, transductive, _ = next(r for r in _ZSL_RUNS if r[:2] == (name, setting))
    t = zsl_defaults(quick=False)["train"]
    train = TrainConfig(steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"], seed=0, log_every=10**9,
                        checkpoint_every=10**9, progress=False)
    _, shares = term_shares(name, {**_ZSL_PARAMS[name], **extra}, fashion_split, train, transductive)
    if name == "devise":  # one term: it is the whole gradient
        assert shares["start"] == {"hinge": 1.0}
        return
    for phase in ("mid", "end"):
        assert sum(shares[phase].values()) == pytest.approx(1.0)
        low = set(low_share_terms(shares[phase], 0.01)) - {"adapt"}
        assert not low, (phase, shares[phase])


@pytest.mark.parametrize("protocol", ["reference", "shots-in-vae"])
def test_cada_vae_few_shot_protocols(zsl_split, monkeypatch, protocol):
    """Reference: the VAEs never see the shots; each novel class gets image- and side-latent samples."""
    from visem.experiments.zsl import few_shot_split
    from visem.models.cada_vae import CADAVAE

    fs = few_shot_split(zsl_split, 3, seed=0)
    novel = set(zsl_split.unseen.tolist())
    seen_labels = []
    orig = CADAVAE.objective

    def spy(self, batch, progress=0.0):
        seen_labels.append(batch["label"].clone())
        return orig(self, batch, progress)

    monkeypatch.setattr(CADAVAE, "objective", spy)
    train = TrainConfig(steps=5, batch_size=64, lr=1e-3, log_every=10**9, checkpoint_every=10**9, progress=False)
    model = train_zsl("cada-vae", {"cls_epochs": 1, "few_shot": protocol}, fs, train)
    classes = torch.unique(fs.train_label)  # train_zsl's rows of class_emb (inductive)
    trained_on = {int(classes[i]) for b in seen_labels for i in b.tolist()}
    assert (trained_on & novel == set()) == (protocol == "reference")
    _, y, src = model.classifier_data(fs.class_emb[classes], classes)
    for j, cid in enumerate(classes.tolist()):
        img, side = int(((y == j) & (src == 0)).sum()), int(((y == j) & (src == 1)).sum())
        if cid in novel and protocol == "reference":
            assert (img, side) == (200, 200)
        else:
            assert (img, side) == (200, 0)
    # a class without training images gets side-information latents only
    _, y, src = model.classifier_data(zsl_split.class_emb[:1], torch.tensor([999]))
    assert int((src == 1).sum()) == 400 and int((src == 0).sum()) == 0
