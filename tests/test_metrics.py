"""Tests of visem.metrics against naive references, oracles and known answers."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from visem.metrics import (
    bleu,
    coco_1k_recall,
    gzsl_harmonic,
    mean_average_precision,
    per_class_accuracy,
    precision_at_k,
    retrieval_recall,
)

CHUNKS = [1, 3, 7, 1000]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def paired_data(
    seed: int = 0, n_img: int = 30, per_img: int = 5, d: int = 8, noise: float = 0.8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, noisy captions of them (shuffled order) and txt_to_img."""
    rng = np.random.default_rng(seed)
    img = unit(rng, n_img, d)
    t2i = rng.permutation(np.repeat(np.arange(n_img), per_img))
    txt = img[t2i] + noise * rng.standard_normal((len(t2i), d))
    return img, txt, t2i


# --------------------------------------------------------------------------
# retrieval recall: naive reference (full matrix, explicit loops)
# --------------------------------------------------------------------------
def canonical_scores(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """Correctly rounded dot products (math.fsum): identical rows score identically.

    A BLAS matrix product need not give two identical rows the same last
    bits (a float32 matrix-vector product here does not), so references for
    tie-heavy data use these.
    """
    x, y = np.asarray(img, dtype=np.float64), np.asarray(txt, dtype=np.float64)
    return np.array([[math.fsum(a * b) for b in y] for a in x])


def naive_ranks(img: np.ndarray, txt: np.ndarray, t2i: np.ndarray, canonical: bool = False) -> tuple[list[int], list[int]]:
    s = canonical_scores(img, txt) if canonical else np.asarray(img, dtype=np.float64) @ np.asarray(txt, dtype=np.float64).T
    n_img, n_txt = s.shape
    i2t = []
    for i in range(n_img):
        correct = max(s[i, j] for j in range(n_txt) if t2i[j] == i)
        i2t.append(1 + sum(1 for j in range(n_txt) if t2i[j] != i and s[i, j] >= correct))
    t2i_ranks = []
    for j in range(n_txt):
        correct = s[t2i[j], j]
        t2i_ranks.append(1 + sum(1 for i in range(n_img) if i != t2i[j] and s[i, j] >= correct))
    return i2t, t2i_ranks


def naive_recall(
    img: np.ndarray, txt: np.ndarray, t2i: np.ndarray, ks: tuple[int, ...] = (1, 5, 10), canonical: bool = False
) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, ranks in zip(("i2t", "t2i"), naive_ranks(img, txt, t2i, canonical)):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * sum(r <= k for r in ranks) / len(ranks)
        srt = sorted(ranks)
        mid = len(srt) // 2
        median = srt[mid] if len(srt) % 2 else (srt[mid - 1] + srt[mid]) / 2
        out[f"{name}_medr"] = float(math.floor(median))
        out[f"{name}_meanr"] = sum(ranks) / len(ranks)
    out["rsum"] = sum(v for key, v in out.items() if "_r" in key and "med" not in key and "mean" not in key)
    return out


def assert_metrics_close(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_recall_matches_naive_reference() -> None:
    img, txt, t2i = paired_data()
    got = retrieval_recall(img, txt, t2i)
    assert list(got) == [
        "i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "i2t_meanr",
        "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "t2i_meanr", "rsum",
    ]  # fmt: skip
    assert_metrics_close(got, naive_recall(img, txt, t2i))
    assert 0 < got["i2t_r1"] < 100 and 0 < got["t2i_r1"] < 100  # a non-trivial case


def test_recall_keys_follow_ks_and_ragged_captions() -> None:
    rng = np.random.default_rng(3)
    img = unit(rng, 12, 6)
    t2i = np.concatenate([np.arange(12), rng.integers(0, 12, size=17)])  # 1 to many captions per image
    txt = img[t2i] + rng.standard_normal((len(t2i), 6))
    got = retrieval_recall(img, txt, t2i, ks=(2, 3))
    assert {"i2t_r2", "i2t_r3", "t2i_r2", "t2i_r3"} <= set(got) and "i2t_r1" not in got
    assert_metrics_close(got, naive_recall(img, txt, t2i, ks=(2, 3)))


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_recall_chunked_equals_unchunked(chunk_size: int) -> None:
    img, txt, t2i = paired_data(seed=1, n_img=23, per_img=3)
    assert retrieval_recall(img, txt, t2i, chunk_size=chunk_size) == retrieval_recall(img, txt, t2i, chunk_size=10**6)


def test_recall_never_builds_more_than_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    img, txt, t2i = paired_data(seed=2, n_img=40, per_img=5)
    expected = retrieval_recall(img, txt, t2i, chunk_size=10**6)
    largest = [0]
    original_mm: Callable[..., Any] = torch.mm
    original_matmul: Callable[..., Any] = torch.Tensor.__matmul__

    def spy_mm(a: torch.Tensor, b: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = original_mm(a, b, **kwargs)
        largest[0] = max(largest[0], out.numel())
        return out

    def spy_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = original_matmul(a, b)
        largest[0] = max(largest[0], out.numel())
        return out

    monkeypatch.setattr(torch, "mm", spy_mm)
    monkeypatch.setattr(torch.Tensor, "__matmul__", spy_matmul)
    got = retrieval_recall(img, txt, t2i, chunk_size=16)
    assert largest[0] == 16 * 16  # 40 x 200 never materialised
    assert got == expected


def test_recall_identical_embeddings_give_perfect_recall() -> None:
    rng = np.random.default_rng(4)
    img = unit(rng, 50, 16)
    got = retrieval_recall(img, img.copy(), np.arange(50))
    assert got["i2t_r1"] == 100.0 and got["t2i_r1"] == 100.0
    assert got["i2t_medr"] == got["t2i_medr"] == 1.0 and got["i2t_meanr"] == got["t2i_meanr"] == 1.0
    assert got["rsum"] == 600.0


def test_recall_hand_built_ranking() -> None:
    # With img = I, the score matrix is txt.T: S[i, j] = txt[j, i].
    s = np.array(
        [
            [0.2, 0.5, 0.6, 0.1, 0.5, 0.0],  # img 0, captions 0-1: best 0.5; 0.6 and tied 0.5 beat it -> rank 3
            [0.9, 0.1, 0.3, 0.4, 0.2, 0.8],  # img 1, captions 2-3: best 0.4; 0.9, 0.8 beat it -> rank 3
            [0.0, 0.0, 0.0, 0.0, 0.7, 0.1],  # img 2, caption 4: rank 1
            [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],  # img 3, caption 5: all tied -> rank 6
        ]
    )
    t2i = np.array([0, 0, 1, 1, 2, 3])
    got = retrieval_recall(np.eye(4), s.T.copy(), t2i)
    # i2t ranks [3, 3, 1, 6]; t2i ranks (columns) [3, 1, 3, 1, 1, 2].
    expected = {
        "i2t_r1": 25.0, "i2t_r5": 75.0, "i2t_r10": 100.0, "i2t_medr": 3.0, "i2t_meanr": 13 / 4,
        "t2i_r1": 50.0, "t2i_r5": 100.0, "t2i_r10": 100.0, "t2i_medr": 1.0, "t2i_meanr": 11 / 6,
        "rsum": 450.0,
    }  # fmt: skip
    assert_metrics_close(got, expected)
    assert_metrics_close(got, naive_recall(np.eye(4), s.T, t2i))


def test_recall_ties_count_against_the_query() -> None:
    # Every score equal: each correct item is beaten by all wrong ones.
    img, txt = np.ones((4, 3)), np.ones((8, 3))
    t2i = np.repeat(np.arange(4), 2)
    got = retrieval_recall(img, txt, t2i, ks=(1, 7))
    assert got["i2t_r1"] == 0.0 and got["t2i_r1"] == 0.0
    assert got["i2t_meanr"] == 1 + 6  # 6 captions of other images tie with the correct one
    assert got["t2i_meanr"] == 1 + 3
    assert got["i2t_r7"] == 100.0 and got["t2i_r7"] == 100.0
    # A single tie: caption 1 scores the same with image 0 (wrong) and image 1 (its own).
    got = retrieval_recall(np.eye(2), np.array([[1.0, 0.0], [0.5, 0.5]]), [0, 1], ks=(1,))
    assert got["t2i_r1"] == 50.0 and got["t2i_meanr"] == 1.5


def test_recall_tie_heavy_matches_naive_reference() -> None:
    # Small-integer embeddings: many exact ties, all scores exact in float64.
    rng = np.random.default_rng(10)
    img = rng.integers(-1, 2, (25, 3)).astype(np.float32)
    t2i = rng.permutation(np.concatenate([np.arange(25), rng.integers(0, 25, 30)]))
    txt = rng.integers(-1, 2, (len(t2i), 3)).astype(np.float32)
    for chunk_size in (4, 1000):
        assert_metrics_close(retrieval_recall(img, txt, t2i, chunk_size=chunk_size), naive_recall(img, txt, t2i))


@pytest.mark.parametrize("d", [64, 128, 512, 1024])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recall_constant_embeddings_get_the_worst_ranks(d: int, dtype: type) -> None:
    # A model that maps everything to one point: every wrong item ties with
    # the correct one and ties count against the query. With n images of 5
    # captions, an image's best caption is beaten by the 5 (n - 1) captions of
    # the others and a caption's image by the other n - 1 images, whatever the
    # rounding of the (non-representable) score.
    n = 20
    v = unit(np.random.default_rng(d), 1, d)[0]
    img, txt = np.tile(v, (n, 1)).astype(dtype), np.tile(v, (5 * n, 1)).astype(dtype)
    got = retrieval_recall(img, txt, np.repeat(np.arange(n), 5), ks=(1, 5, 10, 19, 20))
    assert got["i2t_meanr"] == got["i2t_medr"] == 1 + 5 * (n - 1)
    assert got["t2i_meanr"] == got["t2i_medr"] == n
    assert got["rsum"] == 100.0  # only t2i R@20
    assert got["t2i_r20"] == 100.0 and got["t2i_r19"] == 0.0 and got["i2t_r20"] == 0.0


@pytest.mark.parametrize("d", [64, 512, 1024])
def test_recall_duplicated_images_tie(d: int) -> None:
    # Every image twice: each caption ties with its image's twin, so no
    # caption finds its image first (t2i rank 2 exactly: the noise keeps all
    # other images well below).
    rng = np.random.default_rng(d)
    img = np.repeat(unit(rng, 30, d), 2, axis=0).astype(np.float32)
    txt = (img + 0.3 / np.sqrt(d) * rng.standard_normal(img.shape)).astype(np.float32)
    got = retrieval_recall(img, txt, np.arange(60))
    assert got["t2i_r1"] == 0.0 and got["t2i_meanr"] == 2.0 and got["t2i_r5"] == 100.0
    assert_metrics_close(got, naive_recall(img, txt, np.arange(60), canonical=True))


def test_recall_resolves_near_ties_exactly() -> None:
    # Wrong images whose score differs from the correct one by 1e-12 either
    # way: far inside float32 rounding, so only the exact float64 recheck
    # orders them. Caption j's image is 2j; image 2j + 1 scores 1e-12 above
    # (j even) or below (j odd) it; the odd images get one random caption each.
    rng = np.random.default_rng(3)
    d, n = 512, 40
    img = np.empty((2 * n, d))
    img[0::2] = unit(rng, n, d)
    txt = np.vstack([img[0::2] + 0.3 / np.sqrt(d) * rng.standard_normal((n, d)), unit(rng, n, d)])
    for j in range(n):
        img[2 * j + 1] = img[2 * j] + (1e-12 if j % 2 == 0 else -1e-12) * txt[j] / (txt[j] @ txt[j])
    t2i = np.concatenate([2 * np.arange(n), 2 * np.arange(n) + 1])
    _, ranks = naive_ranks(img, txt, t2i)
    assert ranks[:n] == [2, 1] * (n // 2)  # the construction works in float64
    for dtype in (np.float64, np.float32):
        x = img.astype(dtype)
        assert_metrics_close(retrieval_recall(x, txt.astype(dtype), t2i), naive_recall(x, txt.astype(dtype), t2i))


@functools.cache
def sliced_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    rng = np.random.default_rng(12)
    img = unit(rng, 60, 1024).astype(np.float32)
    t2i = rng.permutation(np.concatenate([np.arange(60), rng.integers(0, 60, 140)]))
    txt = unit(rng, len(t2i), 1024).astype(np.float32)
    txt[:20] = img[t2i[:20]]  # a few perfect captions: exact duplicates of their images
    return img, txt, t2i, naive_recall(img, txt, t2i, canonical=True)


@pytest.mark.parametrize("chunk_size", [3, 97, 256, 300, 1000])
def test_recall_sliced_products_match_naive_reference(chunk_size: int) -> None:
    # d = 1024 float32: most true scores sit inside the bulk of the wrong
    # ones, so many entries fall near the bounds (and later strips of
    # captions take several slices).
    img, txt, t2i, expected = sliced_case()
    assert_metrics_close(retrieval_recall(img, txt, t2i, chunk_size=chunk_size), expected)


@pytest.mark.parametrize("slices", [1, 2, 4, 8])
def test_recall_every_slice_count_matches_naive_reference(monkeypatch: pytest.MonkeyPatch, slices: int) -> None:
    # Only one choice left: the first strip of captions takes one product per
    # block, every later one `slices` (each with its own, tighter bound).
    import visem.metrics as m

    monkeypatch.setattr(m, "_SLICE_CHOICES", (slices,))
    seen: list[int] = []
    strip = m._BlockScorer.strip
    monkeypatch.setattr(m._BlockScorer, "strip", lambda self, b, ct, s: seen.append(s) or strip(self, b, ct, s))
    img, txt, t2i, expected = sliced_case()
    assert_metrics_close(retrieval_recall(img, txt, t2i, chunk_size=50), expected)
    assert seen == [1, slices, slices, slices]


def test_recall_partial_blocks_and_padded_masks_match_naive_reference() -> None:
    # 300 images: a full block of 256 and one of 44; 300 captions per strip
    # (not a multiple of 8: the int8 masks are padded) and a last strip of 100.
    img, txt, t2i = paired_data(seed=17, n_img=300, per_img=2, d=16, noise=0.5)
    for dtype in (np.float64, np.float32):
        x, y = img.astype(dtype), txt.astype(dtype)
        assert_metrics_close(retrieval_recall(x, y, t2i, chunk_size=300), naive_recall(x, y, t2i))


def test_recall_screen_decides_what_the_block_bound_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    # float32, d 1024. Wrong items 1e-6 above or below the correct score
    # (inside the bound of a float32 block, ~6e-5, far outside the screen's
    # ~1e-7) are decided by the float32 screen; those one float32 step of one
    # component apart (~1e-10) by the exact recheck. Caption j belongs to
    # image 4j; image 4j + 1 scores a little above (j even) or below (j odd)
    # it; image 4j + 2 owns caption n + j, which scores a little above or below
    # caption j with image 4j (image to text); images 4j + 1 and 4j + 3 own one
    # random caption each. The first n / 2 differ by 1e-6, the others by one step.
    import visem.metrics as m

    rng = np.random.default_rng(18)
    d, n = 1024, 16
    base = unit(rng, n, d).astype(np.float32)
    txt_own = (base + 0.3 / np.sqrt(d) * rng.standard_normal((n, d))).astype(np.float32)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    near = (base + (1e-6 * sign)[:, None] * txt_own / (txt_own * txt_own).sum(axis=1, keepdims=True)).astype(np.float32)
    dup = (txt_own + (1e-6 * sign)[:, None] * base / (base * base).sum(axis=1, keepdims=True)).astype(np.float32)
    for j in range(n // 2, n):  # one float32 step of the largest component, towards a higher or lower score
        for moved, other, src in ((near, txt_own, base), (dup, base, txt_own)):
            k = int(np.argmax(np.abs(other[j])))
            moved[j] = src[j]
            moved[j, k] = np.nextafter(src[j, k], np.float32(np.inf * sign[j] * np.sign(other[j, k])))
    img = np.empty((4 * n, d), dtype=np.float32)
    img[0::4], img[1::4], img[2::4], img[3::4] = base, near, unit(rng, n, d), unit(rng, n, d)
    txt = np.vstack([txt_own, dup, unit(rng, 2 * n, d)]).astype(np.float32)
    t2i = np.concatenate([4 * np.arange(n), 4 * np.arange(n) + 2, 4 * np.arange(n) + 3, 4 * np.arange(n) + 1])
    i2t, t2i_ranks = naive_ranks(img, txt, t2i, canonical=True)
    assert t2i_ranks[:n] == [2, 1] * (n // 2) and i2t[0::4] == [2, 1] * (n // 2)  # the construction holds in float32
    screened, exact = [0, 0], [0]
    screen = m._Rechecks._screened

    def spy(self: Any, rows: torch.Tensor, cols: torch.Tensor, by_img: torch.Tensor) -> Any:
        out = screen(self, rows, cols, by_img)
        screened[0] += rows.numel()
        screened[1] += rows.numel() - out[0].numel()
        exact[0] += out[0].numel()
        return out

    monkeypatch.setattr(m._Rechecks, "_screened", spy)
    assert_metrics_close(retrieval_recall(img, txt, t2i), naive_recall(img, txt, t2i, canonical=True))
    assert screened[1] >= n  # the 1e-6 items of both directions were decided by the screen ...
    assert exact[0] >= n  # ... and the 1e-12 ones went on to the exact recheck


def test_decode_band_finds_every_nonzero_byte() -> None:
    from visem.metrics import _decode_band

    mask = (torch.rand(3, 40) < 0.1).to(torch.int8)
    mask[0, :9] = 1  # neighbouring bytes of one word, and across words
    words = mask.view(-1).view(torch.int64)
    nz = torch.nonzero(words).squeeze(1)
    found = [(nz[:2], words[nz[:2]]), (nz[2:], words[nz[2:]])]
    assert torch.equal(_decode_band(found), torch.nonzero(mask.view(-1)).squeeze(1))


def test_recall_tie_heavy_at_large_dimension_matches_naive_reference() -> None:
    # Few distinct rows: whole blocks within the bound, rechecked once per
    # distinct (image, caption) content.
    rng = np.random.default_rng(13)
    base = unit(rng, 3, 512)
    img = base[rng.integers(0, 3, 70)].astype(np.float32)
    t2i = rng.permutation(np.concatenate([np.arange(70), rng.integers(0, 70, 200)]))
    txt = base[rng.integers(0, 3, len(t2i))].astype(np.float32)
    expected = naive_recall(img, txt, t2i, canonical=True)
    for chunk_size in (64, 1000):
        assert_metrics_close(retrieval_recall(img, txt, t2i, chunk_size=chunk_size), expected)


def test_recall_dedup_path_matches_direct_rechecks(monkeypatch: pytest.MonkeyPatch) -> None:
    import visem.metrics as m

    rng = np.random.default_rng(14)
    base = unit(rng, 4, 256)
    img = base[rng.integers(0, 4, 40)]
    t2i = np.concatenate([np.arange(40), rng.integers(0, 40, 60)])
    txt = base[rng.integers(0, 4, 100)]
    direct = retrieval_recall(img, txt, t2i)
    monkeypatch.setattr(m, "_DEDUP_PAIRS", 10)
    assert retrieval_recall(img, txt, t2i) == direct
    assert_metrics_close(direct, naive_recall(img, txt, t2i, canonical=True))


def test_recall_float64_fallback_matches_float32_path() -> None:
    # TF32 / bfloat16 matmul settings, and norms float32 cannot hold, send the
    # scoring to float64; the ranks must not change.
    img, txt, t2i = paired_data(seed=15, n_img=40, per_img=3, d=300)
    expected = retrieval_recall(img, txt, t2i)
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert retrieval_recall(img, txt, t2i) == expected
    finally:
        torch.set_float32_matmul_precision(previous)
    assert retrieval_recall(img * 1e35, txt * 1e-30, t2i) == expected  # scaling keeps every order


def test_exact_scores_do_not_depend_on_the_batch() -> None:
    from visem.metrics import _ExactScorer

    rng = np.random.default_rng(16)
    for d in (3, 100, 1024):
        x = torch.as_tensor(unit(rng, 50, d), dtype=torch.float32)
        y = torch.as_tensor(unit(rng, 70, d), dtype=torch.float32)
        x[7] = x[3]
        y[11] = y[5]
        for pairwise in (False, True):
            scorer = _ExactScorer(x, y)
            scorer.pairwise = pairwise
            scorer.width = 1 << max(0, (d - 1).bit_length()) if pairwise else d
            rows, cols = torch.randint(0, 50, (300,)), torch.randint(0, 70, (300,))
            rows[:2], cols[:2] = torch.tensor([3, 7]), torch.tensor([5, 11])
            together = scorer(rows, cols)
            alone = torch.cat([scorer(rows[i : i + 1], cols[i : i + 1]) for i in range(300)])
            assert torch.equal(together, alone)
            assert together[0] == together[1]  # identical vectors, identical bits
            reference = (x[rows].double() * y[cols].double()).sum(dim=1)
            assert torch.allclose(together, reference, rtol=0, atol=1e-14)


def test_recall_matches_torchmetrics_hit_rate() -> None:
    # Optional oracle; torchmetrics' RetrievalRecall divides by the number of
    # relevant items and (>= 1.7.4) treats scores <= 0 as not retrieved, so use
    # RetrievalHitRate and shift scores to be positive (ranking unchanged).
    tm = pytest.importorskip("torchmetrics.retrieval")
    img, txt, t2i = paired_data(seed=5, n_img=15, per_img=4)
    s = torch.as_tensor(img @ txt.T) + 100.0
    n_img, n_txt = s.shape
    rel = torch.as_tensor(t2i)[None, :] == torch.arange(n_img)[:, None]
    got = retrieval_recall(img, txt, t2i)
    for k in (1, 5, 10):
        i2t = tm.RetrievalHitRate(top_k=k)(s.flatten(), rel.flatten(), indexes=torch.arange(n_img).repeat_interleave(n_txt))
        t2i_hr = tm.RetrievalHitRate(top_k=k)(s.T.flatten(), rel.T.flatten(), indexes=torch.arange(n_txt).repeat_interleave(n_img))
        # torchmetrics averages in float32.
        assert got[f"i2t_r{k}"] == pytest.approx(100.0 * float(i2t), abs=1e-4)
        assert got[f"t2i_r{k}"] == pytest.approx(100.0 * float(t2i_hr), abs=1e-4)


def test_recall_accepts_numpy_and_torch() -> None:
    img, txt, t2i = paired_data(seed=6)
    img32, txt32 = img.astype(np.float32), txt.astype(np.float32)
    from_np = retrieval_recall(img32, txt32, t2i)
    from_torch = retrieval_recall(torch.from_numpy(img32), torch.from_numpy(txt32), torch.from_numpy(t2i))
    assert from_np == from_torch
    assert_metrics_close(from_np, naive_recall(img32, txt32, t2i))


def test_recall_rejects_bad_input() -> None:
    img, txt = np.zeros((3, 4)), np.zeros((6, 4))
    t2i = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"same embedding dimension.*img_emb \(3, 4\) and txt_emb \(6, 5\)"):
        retrieval_recall(img, np.zeros((6, 5)), t2i)
    with pytest.raises(ValueError, match=r"txt_to_img\[4\] = 3 points at no image \(img_emb has 3 rows\)"):
        retrieval_recall(img, txt, [0, 0, 1, 1, 3, 2])
    with pytest.raises(ValueError, match=r"txt_to_img\[0\] = -1 points at no image"):
        retrieval_recall(img, txt, [-1, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"image 1 has no caption"):
        retrieval_recall(img, txt, [0, 0, 0, 2, 2, 2])
    with pytest.raises(ValueError, match=r"txt_to_img must have one entry per caption: got shape \(5,\)"):
        retrieval_recall(img, txt, [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match=r"txt_to_img must hold integers"):
        retrieval_recall(img, txt, [0, 0.5, 1, 1, 2, 2])
    bad = img.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"img_emb contains NaN or infinite values \(first in row 2, shape \(3, 4\)\)"):
        retrieval_recall(bad, txt, t2i)
    with pytest.raises(ValueError, match=r"txt_to_img must hold integers, got dtype torch.bool"):
        retrieval_recall(img, txt, np.ones(6, dtype=bool))
    with pytest.raises(ValueError, match=r"img_emb must be a numeric array"):
        retrieval_recall([["a", "b", "c", "d"]] * 3, txt, t2i)
    # Views with negative strides are fine.
    flipped = np.eye(4)[::-1]
    assert retrieval_recall(flipped, flipped, np.arange(4))["i2t_r1"] == 100.0
    with pytest.raises(ValueError, match=r"txt_emb must be 2-D"):
        retrieval_recall(img, np.zeros(6), t2i)
    with pytest.raises(ValueError, match=r"chunk_size must be a positive integer"):
        retrieval_recall(img, txt, t2i, chunk_size=0)


# --------------------------------------------------------------------------
# COCO 1K
# --------------------------------------------------------------------------
def test_coco_1k_is_the_mean_over_folds() -> None:
    n_folds, fold = 5, 12
    img, txt, t2i = paired_data(seed=7, n_img=n_folds * fold, per_img=5)
    got = coco_1k_recall(img, txt, t2i, n_folds=n_folds, fold_size=fold, chunk_size=7)
    per_fold = []
    for f in range(n_folds):
        sel = (t2i >= f * fold) & (t2i < (f + 1) * fold)
        per_fold.append(naive_recall(img[f * fold : (f + 1) * fold], txt[sel], t2i[sel] - f * fold))
    expected = {key: float(np.mean([r[key] for r in per_fold])) for key in per_fold[0]}
    assert_metrics_close(got, expected)
    # The 1K protocol is easier than the full-set one (fewer distractors).
    assert got["rsum"] > retrieval_recall(img, txt, t2i)["rsum"]


def test_coco_1k_rejects_wrong_size() -> None:
    img, txt, t2i = paired_data(seed=8, n_img=20, per_img=2)
    with pytest.raises(ValueError, match=r"n_folds \* fold_size = 25 rows.*got shape \(20, 8\)"):
        coco_1k_recall(img, txt, t2i, n_folds=5, fold_size=5)


# --------------------------------------------------------------------------
# MAP and precision@k: naive references (DSCMR-style loops)
# --------------------------------------------------------------------------
def naive_relevance(ql: np.ndarray, gl: np.ndarray) -> np.ndarray:
    if ql.ndim == 1:
        return ql[:, None] == gl[None, :]
    return np.array([[bool(np.any(np.logical_and(a, b))) for b in gl] for a in ql])


def pessimistic_order(scores: np.ndarray, rel: np.ndarray) -> list[int]:
    """Gallery indices by score descending, irrelevant first among ties."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], bool(rel[j])))


def naive_map(
    q: np.ndarray, g: np.ndarray, ql: np.ndarray, gl: np.ndarray, k: int | None = None, canonical: bool = False
) -> float:
    s, rel = canonical_scores(q, g) if canonical else q @ g.T, naive_relevance(ql, gl)
    res = []
    for i in range(len(q)):
        order = pessimistic_order(s[i], rel[i])
        top = len(order) if k is None else min(k, len(order))
        p, r = 0.0, 0.0
        for j in range(top):
            if rel[i, order[j]]:
                r += 1
                p += r / (j + 1)
        denom = rel[i].sum() if k is None else r
        res.append(p / denom if denom > 0 else 0.0)
    return float(np.mean(res))


def naive_precision(
    q: np.ndarray, g: np.ndarray, ql: np.ndarray, gl: np.ndarray, k: int, canonical: bool = False
) -> float:
    s, rel = canonical_scores(q, g) if canonical else q @ g.T, naive_relevance(ql, gl)
    return float(np.mean([sum(rel[i, j] for j in pessimistic_order(s[i], rel[i])[:k]) / k for i in range(len(q))]))


def label_data(seed: int = 0, nq: int = 17, ng: int = 40, d: int = 6, n_cls: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((n_cls, d))
    ql, gl = rng.integers(0, n_cls, nq), rng.integers(0, n_cls, ng)
    ql[:n_cls] = np.arange(n_cls)
    gl[:n_cls] = np.arange(n_cls)  # every class has gallery items
    q = centres[ql] + 1.5 * rng.standard_normal((nq, d))
    g = centres[gl] + 1.5 * rng.standard_normal((ng, d))
    return q, g, ql, gl


def test_map_matches_sklearn_average_precision() -> None:
    from sklearn.metrics import average_precision_score

    q, g, ql, gl = label_data()
    s = q @ g.T  # continuous scores: no ties, where sklearn's AP is the same
    expected = np.mean([average_precision_score(gl == ql[i], s[i]) for i in range(len(q))])
    got = mean_average_precision(q, g, ql, gl)
    assert got == pytest.approx(expected, rel=1e-12)
    assert 0.0 < got < 1.0


@pytest.mark.parametrize("k", [None, 1, 5, 13, 40, 100])
def test_map_matches_naive_loop(k: int | None) -> None:
    q, g, ql, gl = label_data(seed=1)
    assert mean_average_precision(q, g, ql, gl, k=k) == pytest.approx(naive_map(q, g, ql, gl, k=k), rel=1e-12)


def test_map_multi_hot_matches_naive_loop() -> None:
    rng = np.random.default_rng(2)
    q, g = rng.standard_normal((9, 5)), rng.standard_normal((30, 5))
    ql = (rng.random((9, 6)) < 0.3).astype(np.int64)
    gl = (rng.random((30, 6)) < 0.3).astype(np.int64)
    ql[:, 0] = 1
    gl[:3, 0] = 1  # every query shares label 0 with some gallery items
    for k in (None, 10):
        expected = naive_map(q, g, ql, gl, k=k)
        assert mean_average_precision(q, g, ql, gl, k=k) == pytest.approx(expected, rel=1e-12)
        assert mean_average_precision(q, g, ql.astype(bool), gl.astype(bool), k=k) == pytest.approx(expected, rel=1e-12)
    assert precision_at_k(q, g, ql, gl, k=10) == pytest.approx(naive_precision(q, g, ql, gl, 10), rel=1e-12)


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_map_and_precision_chunked_equal_unchunked(chunk_size: int) -> None:
    q, g, ql, gl = label_data(seed=3)
    for k in (None, 7):
        full = mean_average_precision(q, g, ql, gl, k=k, chunk_size=10**6)
        assert mean_average_precision(q, g, ql, gl, k=k, chunk_size=chunk_size) == pytest.approx(full, rel=1e-14)
    full_p = precision_at_k(q, g, ql, gl, k=10, chunk_size=10**6)
    assert precision_at_k(q, g, ql, gl, k=10, chunk_size=chunk_size) == pytest.approx(full_p, rel=1e-14)


def test_map_hand_computed() -> None:
    # Query 0 (class 0) ranks the gallery g0 > g1 > g2 > g3 with classes
    # [1, 0, 1, 0]: relevant at ranks 2 and 4 -> AP = (1/2 + 2/4) / 2 = 0.5.
    # Query 1 (class 1) ranks g3 > g2 > g1 > g0: relevant (g2, g0) at ranks 2
    # and 4 -> AP = 0.5 as well; query 2 (class 1) ranks like query 0:
    # relevant at ranks 1, 3 -> AP = (1 + 2/3) / 2 = 5/6.
    g = np.array([[4.0], [3.0], [2.0], [1.0]])
    q = np.array([[1.0], [-1.0], [1.0]])
    ql, gl = np.array([0, 1, 1]), np.array([1, 0, 1, 0])
    assert mean_average_precision(q, g, ql, gl) == pytest.approx((0.5 + 0.5 + 5 / 6) / 3)
    # MAP@2: query 0 finds one relevant item at rank 2 -> 1/2; query 1 the same;
    # query 2 one at rank 1 -> 1.
    assert mean_average_precision(q, g, ql, gl, k=2) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # MAP@1: queries 0 and 1 find nothing in the top 1 -> AP 0.
    assert mean_average_precision(q, g, ql, gl, k=1) == pytest.approx(1 / 3)
    assert precision_at_k(q, g, ql, gl, k=2) == pytest.approx((0.5 + 0.5 + 0.5) / 3)
    assert precision_at_k(q, g, ql, gl, k=1) == pytest.approx(1 / 3)


def test_map_and_precision_ties_count_against_the_query() -> None:
    # All three gallery items tie; whatever their order, the relevant ones are
    # placed after the irrelevant one: ranks 2, 3 -> AP = (1/2 + 2/3) / 2.
    g = np.ones((3, 2))
    q = np.ones((1, 2))
    for gl in ([1, 1, 0], [0, 1, 1], [1, 0, 1]):
        assert mean_average_precision(q, g, [1], gl) == pytest.approx((1 / 2 + 2 / 3) / 2)
        assert precision_at_k(q, g, [1], gl, k=1) == 0.0
        assert precision_at_k(q, g, [1], gl, k=2) == 0.5
    # A tie only between relevant items changes nothing.
    assert mean_average_precision(q, g, [1], [1, 1, 1]) == 1.0


def test_map_and_precision_tie_heavy_match_naive_loops() -> None:
    rng = np.random.default_rng(11)
    q = rng.integers(-1, 2, (13, 2)).astype(np.float64)
    g = rng.integers(-1, 2, (31, 2)).astype(np.float64)
    ql, gl = rng.integers(0, 3, 13), rng.integers(0, 3, 31)
    gl[:3] = np.arange(3)
    for k in (None, 1, 4, 10):
        expected = naive_map(q, g, ql, gl, k=k)
        assert mean_average_precision(q, g, ql, gl, k=k, chunk_size=5) == pytest.approx(expected, rel=1e-12)
    for k in (1, 4, 10, 31):
        expected = naive_precision(q, g, ql, gl, k)
        assert precision_at_k(q, g, ql, gl, k=k, chunk_size=5) == pytest.approx(expected, rel=1e-12)
    # Boundary tie: scores [3, 2, 2, 2, 1], relevance [1, 1, 0, 1, 1]; the top 3
    # in pessimistic order is (3: rel, 2: irrel, 2: rel) -> P@3 = 2/3.
    g1 = np.array([[3.0], [2.0], [2.0], [2.0], [1.0]])
    assert precision_at_k(np.ones((1, 1)), g1, [1], [1, 1, 0, 1, 1], k=3) == pytest.approx(2 / 3)


@pytest.mark.parametrize("d", [64, 128, 512, 1024])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_map_and_precision_constant_embeddings_rank_relevant_last(d: int, dtype: type) -> None:
    # Everything at one point: all 50 gallery items tie and the 10 relevant
    # ones go after the 40 irrelevant ones (ranks 41-50), whatever the
    # rounding of the score.
    v = unit(np.random.default_rng(d), 1, d)[0]
    q, g = np.tile(v, (3, 1)).astype(dtype), np.tile(v, (50, 1)).astype(dtype)
    ql, gl = np.zeros(3, dtype=np.int64), np.repeat([0, 1], [10, 40])
    assert mean_average_precision(q, g, ql, gl) == pytest.approx(np.mean([n / (40 + n) for n in range(1, 11)]))
    assert mean_average_precision(q, g, ql, gl, k=45) == pytest.approx(np.mean([n / (40 + n) for n in range(1, 6)]))
    assert mean_average_precision(q, g, ql, gl, k=20) == 0.0
    assert precision_at_k(q, g, ql, gl, k=10) == 0.0
    assert precision_at_k(q, g, ql, gl, k=45) == pytest.approx(5 / 45)


@pytest.mark.parametrize("d", [64, 512, 1024])
def test_map_and_precision_duplicated_gallery_items_tie(d: int) -> None:
    # Each relevant item has an identical twin with another label: the twin
    # ties with it and goes first.
    rng = np.random.default_rng(d)
    base = unit(rng, 30, d)
    g = np.vstack([base, base[:10]]).astype(np.float32)
    gl = np.concatenate([rng.integers(0, 3, 30), np.full(10, 7)])
    q = (base[rng.integers(0, 30, 12)] + 0.5 / np.sqrt(d) * rng.standard_normal((12, d))).astype(np.float32)
    ql = rng.integers(0, 3, 12)
    gl[:3] = [0, 1, 2]
    for k in (None, 5, 30):
        expected = naive_map(q, g, ql, gl, k=k, canonical=True)
        assert mean_average_precision(q, g, ql, gl, k=k, chunk_size=5) == pytest.approx(expected, rel=1e-12)
    for k in (1, 5, 40):
        expected = naive_precision(q, g, ql, gl, k, canonical=True)
        assert precision_at_k(q, g, ql, gl, k=k, chunk_size=5) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1000])
def test_map_and_precision_tie_heavy_chunks_match_naive_loops(chunk_size: int) -> None:
    # Few distinct gallery rows at d = 512: ties at every top-k boundary
    # (items at the k-th score beyond topk's answer), for the topk path
    # (k <= half the gallery) and the sorted-relevant path (the rest).
    rng = np.random.default_rng(17)
    base = unit(rng, 5, 512)
    g = base[rng.integers(0, 5, 60)]
    q = base[rng.integers(0, 5, 11)] + 0.01 * rng.standard_normal((11, 512))
    ql, gl = rng.integers(0, 4, 11), rng.integers(0, 4, 60)
    gl[:4] = np.arange(4)
    for k in (None, 1, 9, 30, 31, 59):
        expected = naive_map(q, g, ql, gl, k=k, canonical=True)
        assert mean_average_precision(q, g, ql, gl, k=k, chunk_size=chunk_size) == pytest.approx(expected, rel=1e-12)
    for k in (1, 9, 13, 30, 60):
        expected = naive_precision(q, g, ql, gl, k, canonical=True)
        assert precision_at_k(q, g, ql, gl, k=k, chunk_size=chunk_size) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("search_max", [0, 10**9])
def test_map_sorted_and_binary_search_paths_agree(monkeypatch: pytest.MonkeyPatch, search_max: int) -> None:
    # Full MAP places irrelevant items by binary search among the sorted
    # relevant ones, or (many relevant items) sorts each partitioned row;
    # both must give the naive pessimistic MAP, ties included.
    import visem.metrics as m

    monkeypatch.setattr(m, "_SEARCH_MAX_RELEVANT", search_max)
    rng = np.random.default_rng(19)
    base = unit(rng, 6, 64)
    g = np.vstack([base[rng.integers(0, 6, 40)], unit(rng, 30, 64)])
    q = base[rng.integers(0, 6, 9)]
    ql = rng.integers(0, 3, 9)
    gl = rng.integers(0, 3, 70)
    gl[:3] = np.arange(3)
    for k in (None, 50):
        expected = naive_map(q, g, ql, gl, k=k, canonical=True)
        assert mean_average_precision(q, g, ql, gl, k=k, chunk_size=4) == pytest.approx(expected, rel=1e-12)
    mh_q = (rng.random((9, 5)) < 0.5).astype(np.int64)
    mh_g = (rng.random((70, 5)) < 0.5).astype(np.int64)
    mh_q[:, 0], mh_g[:5, 0] = 1, 1
    expected = naive_map(q, g, mh_q, mh_g, canonical=True)
    assert mean_average_precision(q, g, mh_q, mh_g, chunk_size=4) == pytest.approx(expected, rel=1e-12)


def test_precision_matches_torchmetrics() -> None:
    # Optional oracle on continuous scores (no ties), shifted positive for
    # torchmetrics >= 1.7.4, which treats scores <= 0 as not retrieved.
    tm = pytest.importorskip("torchmetrics.retrieval")
    q, g, ql, gl = label_data(seed=18, nq=23, ng=70)
    s = torch.as_tensor(q @ g.T) + 100.0
    rel = torch.as_tensor(ql)[:, None] == torch.as_tensor(gl)[None, :]
    index = torch.arange(len(q)).repeat_interleave(len(g))
    for k in (1, 5, 20):
        expected = tm.RetrievalPrecision(top_k=k)(s.flatten(), rel.flatten(), indexes=index)
        assert precision_at_k(q, g, ql, gl, k=k) == pytest.approx(float(expected), abs=1e-6)  # float32 mean


def test_map_empty_queries() -> None:
    q, g = np.eye(3), np.eye(3)
    ql, gl = np.array([0, 5, 1]), np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"query 1 has no relevant item in the gallery"):
        mean_average_precision(q, g, ql, gl)
    with pytest.raises(ValueError, match=r"query 1 has no relevant item"):
        mean_average_precision(q, g, ql, gl, chunk_size=1)
    # Skipped: query 0 finds its item at rank 1 (AP 1). Query 2 (class 1)
    # scores g = [0, 0, 1]: g2 (irrelevant) first, then g0 and g1 tie at 0 and
    # the irrelevant g0 goes first, so g1 is at rank 3 -> AP 1/3.
    assert mean_average_precision(q, g, ql, gl, skip_empty=True) == pytest.approx((1 + 1 / 3) / 2)
    with pytest.raises(ValueError, match=r"no query has a relevant item"):
        mean_average_precision(q, g, [7, 8, 9], gl, skip_empty=True)
    assert precision_at_k(q, g, ql, gl, k=1) == pytest.approx(1 / 3)  # empty query scores 0


def test_map_and_precision_reject_bad_input() -> None:
    q, g = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"same embedding dimension.*query_emb \(2, 3\) and gallery_emb \(4, 2\)"):
        mean_average_precision(q, np.zeros((4, 2)), [0, 1], [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"gallery_labels must have one row per gallery item: got shape \(3,\)"):
        mean_average_precision(q, g, [0, 1], [0, 1, 0])
    with pytest.raises(ValueError, match=r"must both be 1-D class ids or both 2-D multi-hot rows.*\(2, 3\).*\(4, 2\)"):
        mean_average_precision(q, g, np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"query_emb contains NaN or infinite values \(first in row 1"):
        mean_average_precision(np.array([[0.0, 0, 0], [0, np.inf, 0]]), g, [0, 1], [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"k = 5 exceeds the gallery size"):
        precision_at_k(q, g, [0, 1], [0, 1, 0, 1], k=5)
    with pytest.raises(ValueError, match=r"k must be a positive integer"):
        mean_average_precision(q, g, [0, 1], [0, 1, 0, 1], k=0)


# --------------------------------------------------------------------------
# zero-shot accuracy
# --------------------------------------------------------------------------
def test_per_class_accuracy() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(9)
    target = rng.integers(0, 6, 200)
    pred = np.where(rng.random(200) < 0.6, target, rng.integers(0, 6, 200))
    got = per_class_accuracy(pred, target)
    assert got == pytest.approx(100.0 * balanced_accuracy_score(target, pred), rel=1e-12)
    # Naive loop; and a class subset (e.g. the unseen classes of GZSL).
    subset = [1, 4]
    naive = np.mean([np.mean(pred[target == c] == c) for c in subset]) * 100
    assert per_class_accuracy(torch.as_tensor(pred), torch.as_tensor(target), classes=subset) == pytest.approx(naive)
    # Hand example: class 0 has 3 samples, 2 right; class 1 has 1, right.
    assert per_class_accuracy([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_per_class_accuracy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"class 5 listed in classes has no sample"):
        per_class_accuracy([0, 1], [0, 1], classes=[0, 1, 5])
    with pytest.raises(ValueError, match=r"pred and target must have the same shape.*\(3,\).*\(2,\)"):
        per_class_accuracy([0, 1, 1], [0, 1])


def test_gzsl_harmonic() -> None:
    assert gzsl_harmonic(0.0, 0.0) == 0.0
    assert gzsl_harmonic(60.0, 20.0) == pytest.approx(30.0)
    assert gzsl_harmonic(50.0, 0.0) == 0.0
    assert gzsl_harmonic(40.0, 40.0) == pytest.approx(40.0)
    with pytest.raises(ValueError, match=r"acc_unseen must be a finite number >= 0"):
        gzsl_harmonic(10.0, -1.0)


# --------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------
HYPS = ["a man rides a horse on the beach", "two dogs play in the snow", "a red car parked on a street"]
REFS = [
    ["a man is riding a horse along the beach", "a person rides a horse on the sand"],
    ["two dogs are playing in the snow", "dogs playing in snow"],
    ["a red car is parked on the street", "a red vehicle on a city street"],
]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_sacrebleu(n: int) -> None:
    import sacrebleu

    streams = [list(s) for s in zip(*REFS)]
    expected = sacrebleu.metrics.BLEU(max_ngram_order=n).corpus_score(HYPS, streams).score
    assert bleu(HYPS, REFS, n=n) == pytest.approx(expected, rel=1e-12)
    if n == 4:
        assert bleu(HYPS, REFS, n=4) == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score, rel=1e-12)
    assert 0.0 < bleu(HYPS, REFS, n=n) < 100.0


def test_bleu_ragged_references() -> None:
    # Repeating a reference changes neither clipped counts nor the closest
    # reference length, so a ragged list must score like its padded copy.
    ragged = [REFS[0], REFS[1][:1], REFS[2] + ["a red car on the street"]]
    padded = [r + [r[0]] * (3 - len(r)) for r in ragged]
    for n in (2, 4):
        assert bleu(HYPS, ragged, n=n) == pytest.approx(bleu(HYPS, padded, n=n), rel=1e-12)
    assert bleu(HYPS, ragged) != pytest.approx(bleu(HYPS, [r[:1] for r in ragged]))  # extra refs are used
    assert bleu(["the cat sat"], [["the cat sat"]], n=3) == pytest.approx(100.0)


def test_bleu_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"references\[1\] is empty"):
        bleu(HYPS, [REFS[0], [], REFS[2]])
    with pytest.raises(ValueError, match=r"one list per hypothesis, got 2 for 3"):
        bleu(HYPS, REFS[:2])
    with pytest.raises(ValueError, match=r"references\[0\] must be a list of strings, got a single string"):
        bleu(HYPS[:1], ["a man rides a horse"])


def test_docstring_examples_run() -> None:
    import doctest

    import visem.metrics

    result = doctest.testmod(visem.metrics)
    assert result.attempted > 0 and result.failed == 0
