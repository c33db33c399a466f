"""The measured comparison behind the search defaults (docs/search.md, "Measured defaults").

``python -m visem.search.measure --out runs/search-defaults [--styles google twitter] [--seeds 0 1 2]``

For each emoji style (``google``: the demo's collection; ``twitter``: the
``emoji-cross-style`` collection, another style of the same concepts) and
seed: the demo's protocol (:func:`visem.search.demo.write_demo_collection`:
20% of the concepts held out, 20% of the rest captioned, tags on every
image), one index per text tower (``gru``, ``minilm``), each choosing its
fusion on a held-out split of its own training captions; the held-out
folder is added with its tags, and its captions are evaluated against its
images with the dense side alone, BM25 alone and the chosen fusion. The
``auto`` row is what a build choosing both tower and fusion picks: per
seed, the tower whose validation rsum (on the training captions' held-out
split, never on the evaluation captions) was higher.

Prints a table of held-out rsum, mean ± sample std over the seeds, and
writes every number to ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ENCODERS = ("gru", "minilm")


def one(out: Path, style: str, seed: int, encoder: str, steps: int | None,
        image_encoder: str = "efficientnet-lite0") -> dict[str, Any]:
    from visem.search.demo import run_demo

    t0 = time.perf_counter()
    res = run_demo(out, seed=seed, steps=steps, progress=False, style=style,
                   options={"text_encoder": encoder, "image_encoder": image_encoder})
    choice = res["report"]["choice"]
    val = max(choice["candidates"], key=lambda r: r["fused_rsum"]) if choice["candidates"] else {}
    return {"style": style, "seed": seed, "encoder": encoder, "image_encoder": image_encoder,
            "method": res["report"]["method"],
            "fusion": choice["fusion"], "validation_fused_rsum": val.get("fused_rsum"),
            "validation_dense_rsum": val.get("dense_rsum"), "modes": res["heldout"]["modes"],
            "n_heldout_images": res["heldout"]["n_images"], "n_heldout_captions": res["heldout"]["n_captions"],
            "overlap": res["heldout"]["overlap"], "lexical_overlap": res["heldout"].get("lexical_overlap"),
            "seconds": round(time.perf_counter() - t0, 1)}


def table(rows: list[dict[str, Any]]) -> str:
    def stat(xs: list[float]) -> str:
        xs = np.asarray(xs, dtype=float)
        return f"{xs.mean():.1f} ± {xs.std(ddof=1):.1f}" if len(xs) > 1 else f"{xs[0]:.1f} (one seed)"

    lines = ["| collection | row | held-out rsum (mean ± std) | seeds |", "|---|---|---|---|"]
    rows = [r for r in rows if r.get("image_encoder", "efficientnet-lite0") == "efficientnet-lite0"]
    for style in dict.fromkeys(r["style"] for r in rows):
        rs = [r for r in rows if r["style"] == style]
        seeds = sorted({r["seed"] for r in rs})
        name = {"google": "demo (Google style)", "twitter": "emoji-cross-style (Twitter style)"}.get(style, style)
        lex = [next(r for r in rs if r["seed"] == s)["modes"]["lexical"]["rsum"] for s in seeds]
        lines.append(f"| {name} | BM25 only | {stat(lex)} | {len(seeds)} |")
        for enc in ENCODERS:
            er = [r for r in rs if r["encoder"] == enc]
            if er:
                lines.append(f"| {name} | dense only, {enc} | {stat([r['modes']['dense']['rsum'] for r in er])} | {len(er)} |")
                lines.append(f"| {name} | hybrid, {enc} (fusion by validation) | "
                             f"{stat([r['modes']['hybrid']['rsum'] for r in er])} | {len(er)} |")
        auto = []
        for s in seeds:
            cands = [r for r in rs if r["seed"] == s and r["validation_fused_rsum"] is not None]
            if len(cands) == len(ENCODERS):
                auto.append(max(cands, key=lambda r: r["validation_fused_rsum"]))
        if auto:
            picks = ", ".join(f"{r['encoder']} {r['fusion']['kind']}" for r in auto)
            lines.append(f"| {name} | **auto** (tower and fusion by validation: {picks}) | "
                         f"**{stat([r['modes']['hybrid']['rsum'] for r in auto])}** | {len(auto)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m visem.search.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/search-defaults")
    p.add_argument("--styles", nargs="+", default=["google", "twitter"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--image-encoder", default="efficientnet-lite0")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    lite0 = "efficientnet-lite0"
    done = {(r["style"], r["seed"], r["encoder"], r.get("image_encoder", lite0)) for r in rows}
    for style in args.styles:
        for seed in args.seeds:
            for enc in args.encoders:
                if (style, seed, enc, args.image_encoder) in done:
                    continue
                tag = "" if args.image_encoder == lite0 else "-" + args.image_encoder.rsplit("-", 1)[-1]
                row = one(out / f"{style}-{seed}-{enc}{tag}", style, seed, enc, args.steps, args.image_encoder)
                rows.append(row)
                path.write_text(json.dumps(rows, indent=1))
                print(f"{style} seed {seed} {enc}: dense {row['modes']['dense']['rsum']:.1f} "
                      f"lexical {row['modes']['lexical']['rsum']:.1f} hybrid {row['modes']['hybrid']['rsum']:.1f} "
                      f"({row['fusion']}), {row['seconds']:.0f} s", flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def image_to_image(index_dir: str | Path, query_style: str = "twitter", gallery_style: str = "google",
                   progress: bool = False) -> dict[str, float]:
    """Image-to-image R@1/R@10 across emoji styles: each ``query_style`` image ranks the ``gallery_style``
    images; a hit is an image of the same concept. Spaces: the raw EfficientNet pooled features (cosine), the
    index's learned image embedding, and their fusion (sum of the two cosines)."""
    import torch

    from visem.data import load
    from visem.features.image import extract_image_features
    from visem.search import SearchIndex
    from visem.search.embedding import embed_images

    idx = SearchIndex.open(index_dir)
    out: dict[str, float] = {}
    tables = {s: load("emoji").style(s).table for s in (query_style, gallery_style)}
    feats = {s: extract_image_features(t["image"].tolist(), "pooled", progress=progress) for s, t in tables.items()}
    concepts = {s: t["concept"].to_numpy() for s, t in tables.items()}
    q_raw, g_raw = (torch.nn.functional.normalize(torch.as_tensor(feats[s]), dim=-1) for s in (query_style,
                                                                                                gallery_style))
    q_l, g_l = (torch.as_tensor(embed_images(idx.model, torch.as_tensor(feats[s]))) for s in (query_style,
                                                                                              gallery_style))
    rel = torch.as_tensor(concepts[query_style][:, None] == concepts[gallery_style][None, :])
    for name, s in (("raw", q_raw @ g_raw.T), ("learned", q_l @ g_l.T), ("fused", q_raw @ g_raw.T + q_l @ g_l.T)):
        top = s.topk(10, dim=1).indices
        hit = rel.gather(1, top)
        out[f"{name}_r1"] = round(100.0 * float(hit[:, 0].float().mean()), 2)
        out[f"{name}_r10"] = round(100.0 * float(hit.any(1).float().mean()), 2)
    return out
