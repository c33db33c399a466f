"""visem's retrieval metrics next to the floor and the peers' procedures, in CPU seconds (one thread).

    python bench/bench_metrics.py [--images 5000] [--dim 1024] [--queries 3000] [--gallery 30000]
                                  [--label-dim 512] [--vsepp-images 1000] [--sklearn-queries 200] [--reps 2]

Every task runs visem and its peer (or floor) in this one process,
interleaved (peer, visem, peer, visem, ...; the medians are compared), on
the same data:

* ``retrieval_recall`` at COCO-5K size (``--images`` x 5 captions, d
  ``--dim``), both directions, every key, against the floor: the bare score
  matrix ``img @ txt.T`` (one float32 product, nothing else). Two kinds of
  data: *random* unit vectors for images and captions (every correct score
  inside the bulk of the wrong ones: the most entries near it, so the most
  exact rechecks) and *paired* captions (a noisy copy of their image, the
  correct score about 3 sigma above the wrong ones, as for a trained model).
* ``retrieval_recall`` at COCO-1K size against the VSE++ evaluation
  procedure (``i2t`` / ``t2i`` of VSE++'s ``evaluation.py``: per query, the
  scores against every item, a full ``argsort`` and the position of the
  correct item), re-implemented below from that idea; the ranks are checked
  equal (the data has no ties).
* ``mean_average_precision`` (full, and MAP@100) and ``precision_at_k``
  (P@100): ``--queries`` x ``--gallery`` at d ``--label-dim``, single-label
  (50 classes) and multi-label (24 labels, 8% each), against the sort
  reference: float32 products and one ``torch.sort`` of every query's row.
  The issue's size is ``--queries 30000``; the time per query does not
  depend on the number of queries and the memory is per chunk.
* full MAP on ``--sklearn-queries`` queries against a per-query loop of
  scikit-learn's ``average_precision_score`` (continuous scores: no ties,
  where sklearn's AP and visem's agree).

Prints the machine and one line per task; :func:`rows` returns them for
``bench/run_all.py``, which writes ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial

import numpy as np
import torch
from _measure import Row, machine, measure_cpu

from visem.metrics import mean_average_precision, precision_at_k, retrieval_recall


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def recall_data(n: int, d: int, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images, 5 captions each (consecutive), float32 unit vectors."""
    g = torch.Generator().manual_seed(seed)
    img = unit(torch.randn(n, d, generator=g))
    t2i = torch.arange(n).repeat_interleave(5)
    noise = unit(torch.randn(5 * n, d, generator=g))
    if kind == "random":
        txt = noise
    else:  # correct score ~ 1 / sqrt(1 + 10^2) ~ 0.1 ~ 3 sigma of the wrong ones at d = 1024
        txt = unit(img[t2i] + 10.0 * noise)
    return img, txt, t2i


def label_data(nq: int, ng: int, d: int, multi: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gallery = unit(torch.randn(ng, d, generator=g))
    queries = unit(gallery[torch.randint(0, ng, (nq,), generator=g)] + 0.5 * torch.randn(nq, d, generator=g) / d**0.5)
    if multi:
        gl = torch.rand(ng, 24, generator=g) < 0.08
        gl[:, 0] |= ~gl.any(dim=1)
        ql = torch.rand(nq, 24, generator=g) < 0.08
        ql[:, 0] |= ~ql.any(dim=1)
    else:
        gl, ql = torch.arange(ng) % 50, torch.randint(0, 50, (nq,), generator=g)
    return queries, gallery, ql, gl


# --------------------------------------------------------------------------
# peers
# --------------------------------------------------------------------------
def score_matrix(img: torch.Tensor, txt: torch.Tensor) -> tuple[int, int]:
    """The floor: the bare score matrix, one float32 product."""
    s = img @ txt.T
    return tuple(s.shape)


def vsepp_ranks(img: np.ndarray, txt: np.ndarray, t2i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks by the VSE++ evaluation procedure (its ``i2t`` / ``t2i`` idea).

    Image to text: the image's scores against every caption, a full
    argsort (descending) and the best position among its own captions.
    Text to image: per caption, scores against every image, argsort, the
    position of its image. Ties fall where argsort puts them.
    """
    own = [np.nonzero(t2i == i)[0] for i in range(len(img))]
    r_i2t = np.empty(len(img), dtype=np.int64)
    for i in range(len(img)):
        order = np.argsort(img[i] @ txt.T)[::-1]
        r_i2t[i] = min(np.nonzero(order == j)[0][0] for j in own[i])
    r_t2i = np.empty(len(txt), dtype=np.int64)
    for j in range(len(txt)):
        order = np.argsort(txt[j] @ img.T)[::-1]
        r_t2i[j] = np.nonzero(order == t2i[j])[0][0]
    return r_i2t, r_t2i


def sort_reference(q: torch.Tensor, g: torch.Tensor, chunk: int = 256) -> int:
    """float32 products and one sort of every query's row: what a full ranking costs."""
    for a in range(0, q.shape[0], chunk):
        torch.sort(q[a : a + chunk] @ g.T, dim=1, descending=True)
    return q.shape[0]


def sklearn_map(q: torch.Tensor, g: torch.Tensor, ql: torch.Tensor, gl: torch.Tensor) -> float:
    """A per-query loop of scikit-learn's average_precision_score (no ties in the data)."""
    from sklearn.metrics import average_precision_score

    s = (q.double() @ g.double().T).numpy()
    qn, gn = ql.numpy(), gl.numpy()
    aps = []
    for i in range(len(s)):
        rel = (gn & qn[i]).any(axis=1) if gn.ndim == 2 else gn == qn[i]
        aps.append(average_precision_score(rel, s[i]))
    return float(np.mean(aps))


# --------------------------------------------------------------------------
# runner
# --------------------------------------------------------------------------
def compare(task: str, visem_fn, peer: str, peer_fn, reps: int, command: str, note: str = "") -> Row:
    """Run peer and visem alternately ``reps`` times; medians of CPU seconds; RSS of visem's calls."""
    peer_s, visem_s, rss = [], [], []
    out = {}
    for _ in range(reps):
        out["peer"], cpu, _, _ = measure_cpu(peer_fn)
        peer_s.append(cpu)
        out["visem"], cpu, _, mem = measure_cpu(visem_fn)
        visem_s.append(cpu)
        rss.append(mem)
    if reps > 1:  # close with the peer, so that visem sits between two of its runs
        out["peer"], cpu, _, _ = measure_cpu(peer_fn)
        peer_s.append(cpu)
    row = Row(task, statistics.median(visem_s), peer, statistics.median(peer_s), max(rss), command, note,
              extra={"visem_runs_s": visem_s, "peer_runs_s": peer_s})
    print(f"{task}: visem {row.visem_s:.2f} s, {peer} {row.peer_s:.2f} s, ratio {row.ratio:.3f}, "
          f"peak RSS +{row.peak_rss_mb:.0f} MB {note}", flush=True)
    row.extra["outputs"] = {k: v if isinstance(v, (int, float)) else str(v)[:80] for k, v in out.items()}
    return row


def recall_rows(args: argparse.Namespace, command: str) -> list[Row]:
    out: list[Row] = []
    n, d = args.images, args.dim
    for kind in ("random", "paired"):
        img, txt, t2i = recall_data(n, d, kind)
        out.append(compare(f"retrieval_recall {n:,} x {5 * n:,}, d {d}, {kind}, both directions",
                           partial(retrieval_recall, img, txt, t2i), "floor: img @ txt.T",
                           partial(score_matrix, img, txt), args.reps, command))
    m = args.vsepp_images
    img, txt, t2i = recall_data(m, d, "paired", seed=1)
    arrays = (img.numpy(), txt.numpy(), t2i.numpy())
    vs = vsepp_ranks(*arrays)
    got = retrieval_recall(img, txt, t2i, ks=(1,))
    same = got["i2t_meanr"] == float(np.mean(vs[0]) + 1) and got["t2i_meanr"] == float(np.mean(vs[1]) + 1)
    out.append(compare(f"retrieval_recall {m:,} x {5 * m:,} (COCO-1K fold), d {d}",
                       partial(retrieval_recall, img, txt, t2i), "VSE++ evaluation procedure (per-query argsort)",
                       partial(vsepp_ranks, *arrays), 1, command, note="ranks equal" if same else "RANKS DIFFER"))
    return out


def label_rows(args: argparse.Namespace, command: str, multi: bool) -> list[Row]:
    nq, ng, dl, s = args.queries, args.gallery, args.label_dim, args.sklearn_queries
    labels = "multi-label (24 labels)" if multi else "single-label (50 classes)"
    q, g, ql, gl = label_data(nq, ng, dl, multi)
    size = f"{nq:,} x {ng:,}, d {dl}, {labels}"
    ref, sort_ref = "sort reference: float32 products + sort of every row", partial(sort_reference, q, g)
    out = [
        compare(f"mean_average_precision {size}", partial(mean_average_precision, q, g, ql, gl), ref, sort_ref, 1, command),
        compare(f"mean_average_precision k=100 {size}", partial(mean_average_precision, q, g, ql, gl, k=100),
                ref, sort_ref, 1, command),
        compare(f"precision_at_k k=100 {size}", partial(precision_at_k, q, g, ql, gl, k=100), ref, sort_ref, 1, command),
    ]
    sub = (q[:s], g, ql[:s], gl)
    agree = abs(mean_average_precision(*sub) - sklearn_map(*sub)) < 1e-9
    out.append(compare(f"mean_average_precision {s:,} x {ng:,}, d {dl}, {labels}", partial(mean_average_precision, *sub),
                       "per-query sklearn average_precision_score loop", partial(sklearn_map, *sub), 1, command,
                       note="MAP equal to sklearn's" if agree else "MAP DIFFERS from sklearn's"))
    return out


def rows(args: argparse.Namespace, command: str) -> list[Row]:
    torch.set_num_threads(1)
    return recall_rows(args, command) + label_rows(args, command, False) + label_rows(args, command, True)


def parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The sizes of the metric benchmarks; ``add_help=False`` to use them as a parent parser (bench/run_all.py)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=add_help)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--vsepp-images", type=int, default=1000)
    p.add_argument("--queries", type=int, default=3000)
    p.add_argument("--gallery", type=int, default=30000)
    p.add_argument("--label-dim", type=int, default=512)
    p.add_argument("--sklearn-queries", type=int, default=200)
    p.add_argument("--reps", type=int, default=2, help="alternations of floor and visem for retrieval_recall")
    return p


def main() -> None:
    p = parser()
    p.add_argument("--json", help="write the rows here as JSON")
    args = p.parse_args()
    command = "python " + " ".join(sys.argv)
    torch.set_num_threads(1)
    print(f"command: {command}")
    print("machine: " + json.dumps(machine()))
    result = rows(args, command)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ | {"ratio": r.ratio} for r in result], f, indent=1)


if __name__ == "__main__":
    main()
