"""Zero-shot SBIR: Hamming ranking against a naive loop, binary MAP / P@k by hand, PR curves, ITQ, the
binary read-outs, and a planted-signal data set on which LCALE must beat random by far."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visem.metrics import hamming_distance, mean_average_precision, precision_at_k, precision_recall_curve
from visem.models import build_model
from visem.models.hashing import ITQ, SignCodes, sign_codes
from visem.models.sbir import sbir_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- naive references
def _naive_order(dist_row, rel_row):
    """Gallery indices by increasing distance, irrelevant items first among equal distances (ties against the query)."""
    return sorted(range(len(dist_row)), key=lambda j: (dist_row[j], bool(rel_row[j])))


def _naive_hamming(q, g):
    return [[sum(int(a != b) for a, b in zip(qi, gj)) for gj in g] for qi in q]


def _naive_ap(order, rel_row):
    hits, total = 0, 0.0
    for r, j in enumerate(order, start=1):
        if rel_row[j]:
            hits += 1
            total += hits / r
    return total / hits


def _naive_prec_at(order, rel_row, k):
    return sum(bool(rel_row[j]) for j in order[:k]) / k


@pytest.mark.parametrize("bits", [3, 8, 64])
def test_hamming_ranking_matches_a_naive_loop_with_ties(bits):
    g = np.random.default_rng(bits)
    q_codes = g.choice([-1.0, 1.0], size=(7, bits))
    g_codes = g.choice([-1.0, 1.0], size=(40, bits))
    g_codes[5] = g_codes[6] = q_codes[0]  # identical codes: exact ties at distance 0
    ql, gl = g.integers(0, 3, 7), g.integers(0, 3, 40)
    gl[5], gl[6] = (ql[0] + 1) % 3, ql[0]  # one relevant, one not: the irrelevant one ranks first
    dist = _naive_hamming(q_codes, g_codes)
    assert hamming_distance(q_codes, g_codes).tolist() == dist
    assert hamming_distance((q_codes > 0), (g_codes > 0).astype(np.int64)).tolist() == dist  # {0,1} codes too
    rel = ql[:, None] == gl[None, :]
    orders = [_naive_order(dist[i], rel[i]) for i in range(7)]
    want_map = np.mean([_naive_ap(orders[i], rel[i]) for i in range(7)])
    want_p = np.mean([_naive_prec_at(orders[i], rel[i], 10) for i in range(7)])
    assert mean_average_precision(q_codes, g_codes, ql, gl) == pytest.approx(want_map, abs=1e-12)
    assert precision_at_k(q_codes, g_codes, ql, gl, k=10) == pytest.approx(want_p, abs=1e-12)
    assert sbir_metrics(torch.tensor(q_codes), torch.tensor(g_codes), ql, gl, binary=True, k=10) == pytest.approx(
        {"map": want_map, "p_at_100": want_p}, abs=1e-12)


def test_binary_map_and_precision_on_a_hand_built_fixture():
    # one 4-bit query; gallery distances 0, 1, 1, 2, 4 with relevance R, N, R, N, R
    q = [[1, 1, 1, 1]]
    g = [[1, 1, 1, 1], [1, 1, 1, -1], [-1, 1, 1, 1], [1, 1, -1, -1], [-1, -1, -1, -1]]
    ql, gl = [0], [0, 1, 0, 1, 0]
    assert hamming_distance(q, g).tolist() == [[0, 1, 1, 2, 4]]
    # ranking: d0 (R) | d1 tie: N before R | d2 N | d4 R  ->  relevant at ranks 1, 3, 5
    assert mean_average_precision(q, g, ql, gl) == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert precision_at_k(q, g, ql, gl, k=2) == pytest.approx(1 / 2)
    assert precision_at_k(q, g, ql, gl, k=3) == pytest.approx(2 / 3)
    # a degenerate hash (every code equal) gets the worst ranking, not a lucky one
    flat = [[1, 1, 1, 1]] * 5
    assert mean_average_precision(q, flat, ql, gl) == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3)
    with pytest.raises(ValueError, match="binary codes"):
        hamming_distance([[0.5, 1.0]], [[1.0, 1.0]])


def test_precision_recall_curve_matches_a_naive_loop():
    g = np.random.default_rng(3)
    q, gal = g.normal(size=(6, 5)), g.normal(size=(30, 5))
    gal[3] = gal[4]  # a tie
    ql, gl = g.integers(0, 3, 6), g.integers(0, 3, 30)
    ql[0] = gl[3]
    levels, got = precision_recall_curve(q, gal, ql, gl, recall_levels=11, chunk_size=4)
    rel = ql[:, None] == gl[None, :]
    want = np.zeros(11)
    for i in range(6):
        scores = gal @ q[i]
        order = sorted(range(30), key=lambda j: (-scores[j], bool(rel[i, j])))
        hits = np.cumsum([rel[i, j] for j in order])
        prec, rec = hits / np.arange(1, 31), hits / rel[i].sum()
        want += [prec[rec >= t].max() for t in levels]
    assert got == pytest.approx(want / 6, abs=1e-12)
    assert got[0] >= got[-1] and all(np.diff(got) <= 1e-12)  # interpolated precision never rises with recall


def test_itq_rotation_is_orthogonal_and_its_quantisation_loss_never_rises():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64)
    itq = ITQ(bits=8, n_iter=30).fit(x)
    r = itq.rotation
    assert torch.allclose(r.T @ r, torch.eye(8, dtype=r.dtype), atol=1e-10)
    assert all(b <= a + 1e-9 for a, b in zip(itq.losses, itq.losses[1:]))
    v = (x - itq.mean) @ itq.pca
    assert itq.losses[-1] <= (sign_codes(v) - v).pow(2).sum().item() + 1e-9  # no worse than the PCA axes themselves
    codes = itq(x)
    assert codes.shape == (300, 8) and set(codes.unique().tolist()) == {-1.0, 1.0}
    sign = SignCodes().fit(x)
    assert (sign(x) > 0).double().mean(0).sub(0.5).abs().max() < 0.2  # centred: bits roughly balanced


def test_hashing_models_report_codes_and_real_models_their_read_out():
    dims = {"image_dim": 6, "sketch_dim": 5, "class_dim": 4, "n_classes": 3}
    g = torch.Generator().manual_seed(0)
    data = {"sketch": torch.randn(9, 5, generator=g), "image": torch.randn(12, 6, generator=g),
            "sketch_label": torch.arange(9) % 3, "image_label": torch.arange(12) % 3}
    for name in ("gdh", "zsih"):
        model = build_model(name, {"bits": 8}, dims=dims)
        s, i = model.binary_codes(data["sketch"], data["image"])
        assert s.shape == (9, 8) and set(torch.cat([s, i]).unique().tolist()) <= {-1.0, 1.0}
        assert set(model.evaluate(data)) == {"map", "p_at_100"}
    for name, readout in (("lcale-sbir", "sign"), ("sem-pcyc", "itq")):
        model = build_model(name, {}, dims=dims)
        assert model.readout == readout
        assert set(model.evaluate(data)) == {"map", "p_at_100"}
        model.fit_readout(data["sketch"], data["image"])
        assert set(model.evaluate(data)) == {"map", "p_at_100", "map_binary", "p_at_100_binary"}
    assert build_model("gn-triplet", {}, dims=dims).readout is None


# --------------------------------------------------------------------------- planted signal
def planted_sbir(n_classes=16, per_class=12, seed=0):
    """Sketches and images of class ``c`` are noisy linear views of a class prototype; the class embedding too."""
    g = np.random.default_rng(seed)
    proto = g.normal(size=(n_classes, 8))
    w_s, w_i, w_c = g.normal(size=(8, 20)), g.normal(size=(8, 24)), g.normal(size=(8, 10))
    ls = np.repeat(np.arange(n_classes), per_class)
    li = np.repeat(np.arange(n_classes), 2 * per_class)
    sketch = proto[ls] @ w_s + 0.5 * g.normal(size=(len(ls), 20))
    image = np.tanh(proto[li] @ w_i) + 0.3 * g.normal(size=(len(li), 24))
    return {"sketch": sketch.astype(np.float32), "sketch_label": ls, "image": image.astype(np.float32),
            "image_label": li, "class_emb": (proto @ w_c).astype(np.float32), "unseen_classes": None}


def test_lcale_beats_random_by_far_on_a_planted_signal():
    from visem.experiments.sbir import make_sbir_split, random_floor, sbir_scores, train_sbir
    from visem.train.trainer import TrainConfig

    sp = make_sbir_split(planted_sbir(), seed=0, unseen_fraction=0.25, max_class_share=None)
    tc = TrainConfig(steps=300, batch_size=64, lr=3e-3, seed=0, log_every=10**9, checkpoint_every=10**9,
                     progress=False)
    model, _ = train_sbir("lcale-sbir", {"latent_dim": 8, "hidden": [32], "reg_hidden": [16]}, sp, tc)
    scores = sbir_scores(model, sp)
    floor = random_floor(sp)["map"]
    assert floor < 0.35  # 4 unseen classes of equal size
    assert scores["real"]["map"] > floor + 0.4, (scores, floor)
    assert scores["binary"]["map"] > floor + 0.25, (scores, floor)


def test_lcale_on_sketches_is_lcale_with_the_sketch_in_the_text_slot():
    dims = {"image_dim": 6, "class_dim": 4}
    torch.manual_seed(0)
    text_model = build_model("lcale", {}, dims={**dims, "text_dim": 5}).eval()
    torch.manual_seed(0)
    sketch_model = build_model("lcale-sbir", {}, dims={**dims, "sketch_dim": 5}).eval()
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(8, 6, generator=g), "sketch": torch.randn(8, 5, generator=g),
             "label": torch.arange(8) % 3, "class_emb": torch.randn(3, 4, generator=g)}
    a = text_model.loss({**batch, "text": batch["sketch"]})
    b = sketch_model.loss(batch)
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k]) for k in a)
    assert torch.equal(sketch_model.embed_sketch(batch["sketch"]), text_model.embed_text(batch["sketch"]))
    with pytest.raises(TypeError, match="embed_sketch"):
        sketch_model.embed_text(batch["sketch"])
