"""Search commands: ``visem index build|add|eval|info``, ``visem search``, ``visem serve``."""

from __future__ import annotations

import argparse
import json

from visem.config import parse_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, extend, evaluate or describe a search index")
    isub = p.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)

    b = isub.add_parser("build", help="train on a folder of images and a caption file, write a searchable index")
    b.add_argument("--images", required=True, help="folder of images (searched recursively)")
    b.add_argument("--captions", default=None,
                   help="CSV or JSONL of image,caption rows (optional tags, label columns); most images may have none")
    b.add_argument("--out", required=True, help="index folder to write")
    b.add_argument("--method", default=None, help="a retrieval model to train instead of the automatic choice")
    b.add_argument("--source", default=None, help="a paired source index to adapt from (VSA-AE-MMD)")
    length = b.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help="training steps (default: 15 passes over the training items, at least 300)")
    length.add_argument("--epochs", type=float, default=None, help="training passes over the training items")
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--lr", type=float, default=5e-4)
    b.add_argument("--embed-dim", type=int, default=256)
    b.add_argument("--crop", type=float, default=1.0, help="centre-crop fraction before resizing (0.875 for photos)")
    b.add_argument("--exact-max", type=int, default=50_000, help="exact search up to this many images, IVF above")
    b.add_argument("--ivf-max", type=int, default=250_000, help="IVF (float32 lists) up to this many images, IVF-PQ above")
    b.add_argument("--index-type", choices=["auto", "exact", "ivf", "ivfpq"], default="auto",
                   help="force the vector index's structure (default: by the number of images)")
    b.add_argument("--opq", action="store_true", help="IVF-PQ: learn an OPQ rotation before product quantization")
    b.add_argument("--rerank", type=int, default=100,
                   help="IVF-PQ: candidates re-scored exactly per query (raised at build, up to 1000, when probing "
                        "more lists stops raising recall)")
    b.add_argument("--backend", choices=["faiss", "milvus"], default="faiss",
                   help="where the vectors are searched: faiss files in the index folder, or Milvus")
    b.add_argument("--uri", default=None,
                   help="Milvus: a Milvus Lite file (relative to the index folder; default milvus.db) or a server URL")
    b.add_argument("--workers", type=int, default=None,
                   help="image-decoding worker processes (default: from the machine; 0 decodes in this process)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a model config value, e.g. --set heads=2 (repeatable)")
    b.add_argument("--text-encoder", default=None, choices=("gru", "minilm"),
                   help="text tower (default: chosen on held-out captions when there are enough, else minilm)")
    b.add_argument("--image-encoder", default="efficientnet-lite0",
                   help="efficientnet-lite0 (default), efficientnet-lite1 or efficientnet-lite2")
    b.add_argument("--fusion", default="auto", metavar="auto|dense|lexical|weighted:W|rrf:K",
                   help="how the dense and word-match scores combine (default auto: chosen on held-out captions)")
    b.add_argument("--no-choose", dest="choose", action="store_false",
                   help="no held-out validation: the documented defaults for what is not given")
    b.add_argument("--regions", action="store_true",
                   help="region features (7 x 7 grid) for A3VSE's attention instead of pooled ones (49x the image cost)")
    b.add_argument("--force", action="store_true", help="replace an existing index at --out")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    from visem.cli.core import add_threads_option

    add_threads_option(b, default=None)
    b.set_defaults(func=cmd_build)

    a = isub.add_parser("add", help="embed new images into an index without retraining")
    a.add_argument("index")
    a.add_argument("--images", required=True, help="folder of new images")
    a.add_argument("--captions", default=None,
                   help="CSV or JSONL of the new images' tags and captions: their words become searchable")
    a.add_argument("--quiet", action="store_true")
    a.add_argument("--workers", type=int, default=None, help="image-decoding worker processes (default: from the machine)")
    a.set_defaults(func=cmd_add)

    e = isub.add_parser("eval", help="R@1/5/10 both ways on held-out image,caption rows")
    e.add_argument("index")
    e.add_argument("--captions", required=True, help="CSV or JSONL of held-out image,caption rows")
    e.add_argument("--images", default=None, help="folder the rows' paths are relative to (default: the index's)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    m = isub.add_parser("map", help="a 2-D map of the images and captions, with thumbnails (PNG, SVG or PDF)")
    m.add_argument("index")
    m.add_argument("--out", required=True, help="image file to write (map.png)")
    m.add_argument("--images", type=int, default=2000, help="images in the map (a seeded sample)")
    m.add_argument("--captions", type=int, default=500, help="captions in the map (a seeded sample)")
    m.add_argument("--thumbnails", type=int, default=150, help="image points drawn as thumbnails")
    m.add_argument("--method", default="auto", choices=("auto", "umap", "tsne", "pca"),
                   help="auto: UMAP if umap-learn is installed, else t-SNE (PCA below 50 points)")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_map)

    i = isub.add_parser("info", help="what an index holds and how it was built")
    i.add_argument("index")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("search", help="search an index by text, or by image with --image")
    s.add_argument("index")
    s.add_argument("query", nargs="?", default=None, help="text query")
    s.add_argument("--image", default=None, help="an image file as the query (similar images and captions)")
    s.add_argument("-k", type=int, default=10, help="results to show")
    s.add_argument("--mode", default=None, choices=("hybrid", "dense", "lexical"),
                   help="the index's fusion (default), or one side alone")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_search)

    v = sub.add_parser("serve", help="serve the search page and its JSON API")
    v.add_argument("index")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.set_defaults(func=cmd_serve)


def _print_skips(skipped: dict, problems: list[str]) -> None:
    if skipped:
        print("skipped: " + ", ".join(f"{n} {k}" for k, n in skipped.items()))
    for line in problems:
        print(f"  {line}")


def cmd_build(args: argparse.Namespace) -> int:
    from visem.runtime import set_threads

    set_threads(args.threads)
    from visem.search import BuildOptions, build_index
    from visem.search.lexical import fusion_label, parse_fusion

    opts = BuildOptions(method=args.method, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, embed_dim=args.embed_dim, seed=args.seed, crop=args.crop, exact_max=args.exact_max,
                        ivf_max=args.ivf_max, index_type=None if args.index_type == "auto" else args.index_type,
                        opq=args.opq, rerank=args.rerank, backend=args.backend, uri=args.uri, workers=args.workers,
                        model=parse_overrides(args.overrides), progress=not args.quiet,
                        text_encoder=args.text_encoder, image_encoder=args.image_encoder,
                        fusion=parse_fusion(args.fusion) or None, choose=args.choose, regions=args.regions).check()
    # under torchrun (the process group is opened by visem.cli.main) every rank extracts its share of the
    # features and trains data-parallel; rank 0 writes the index
    rep = build_index(args.images, args.captions, args.out, opts, source=args.source, overwrite=args.force)
    if rep is None:
        return 0
    print(f"method: {rep.method} ({rep.reason})")
    print(f"images: {rep.n_images} ({rep.n_captioned} captioned, {rep.n_captions} captions; "
          f"{rep.n_pseudo} with pseudo captions from {rep.pseudo_source})")
    _print_skips(rep.skipped, rep.problems)
    for note in rep.notes:
        print(f"note: {note}")
    c = rep.choice
    print(f"chose: {c['method']} with the {c['text_encoder']} text tower and {c['image_encoder']}, fusion "
          f"{fusion_label(c['fusion'])} ({c['how']}: {c['why']})")
    for row in c.get("candidates", []):
        print(f"  held-out rsum, {row['method']} + {row['text_encoder']}: dense {row['dense_rsum']:.1f}, "
              f"fused ({fusion_label(row['fusion'])}) {row['fused_rsum']:.1f}")
    print("vectors: " + describe_ann(rep.ann))
    print(f"trained {rep.steps} steps; built in {rep.seconds:.0f} s -> {args.out}")
    return 0


def describe_ann(ann: dict) -> str:
    """One line on the vector index a build made (its report's ``ann``)."""
    where = " in Milvus" if ann.get("backend") == "milvus" else ""
    size = f"{ann['n']} x {ann['dim']}"
    if ann["kind"] == "exact":
        return f"exact inner-product search over {size}{where}"
    lists = f"{ann['nlist']} lists, nprobe {ann['nprobe']}"
    if ann["kind"] == "ivf":
        what = f"IVF ({lists})"
    elif ann["kind"] == "ivfpq":
        what = (f"IVF-PQ{' with OPQ' if ann.get('opq') else ''} ({lists}, {ann['pq_m']}-byte codes, "
                f"top {ann['rerank']} re-ranked exactly)")
    else:
        what = ann["kind"]
    recall = (f"; recall@10 against exact search {ann['recall_at_10']:.3f} on {ann['n_queries']} queries"
              if ann.get("n_queries") else "")
    return f"{what} over {size}{where}{recall}"


def cmd_add(args: argparse.Namespace) -> int:
    from visem.search import SearchIndex

    rep = SearchIndex.open(args.index).add_images(args.images, progress=not args.quiet, captions=args.captions,
                                                  workers=args.workers)
    print(f"added {rep['added']} images ({rep['already_indexed']} already indexed); index now {rep['n_images']}")
    _print_skips(rep["skipped"], rep["problems"])
    return 0


def print_heldout(res: dict, indent: str = "") -> None:
    """R@K both ways of each side measured by :meth:`SearchIndex.evaluate` (the index's fusion first)."""
    names = {"hybrid": f"fused ({res.get('fusion', '')})", "dense": "dense only", "lexical": "words only (BM25)"}
    w = max(len(n) for n in names.values())
    print(f"{indent}{'':<{w}} {'':<11}   R@1    R@5   R@10   medR    rsum")
    for mode in ("hybrid", "dense", "lexical"):
        m = res["modes"].get(mode)
        if m is None:
            continue
        for d, label in (("i2t", "image->text"), ("t2i", "text->image")):
            head = names[mode] if d == "i2t" else ""
            print(f"{indent}{head:<{w}} {label:<11} {m[d + '_r1']:5.1f}  {m[d + '_r5']:5.1f}  {m[d + '_r10']:5.1f}  "
                  f"{m[d + '_medr']:5.1f}" + (f"  {m['rsum']:6.1f}" if d == "t2i" else ""))


def cmd_eval(args: argparse.Namespace) -> int:
    from visem.search import SearchIndex

    res = SearchIndex.open(args.index).evaluate(args.captions, args.images)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['n_captions']} held-out captions of {res['n_images']} images ({res['in_index']} of them indexed)")
    if res["overlap"]:
        print(f"warning: {res['overlap']} of these pairs were training pairs: not a held-out measurement")
    if res.get("lexical_overlap"):
        print(f"warning: {res['lexical_overlap']} of these captions are in their image's indexed words: "
              "the word-match numbers are not held out")
    print_heldout(res)
    print(f"rsum {res['rsum']:.1f}")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from visem.search import SearchIndex
    from visem.search.map import plot_map

    m = plot_map(SearchIndex.open(args.index), args.out, n_images=args.images, n_captions=args.captions,
                 thumbnails=args.thumbnails, method=args.method, seed=args.seed)
    print(f"map of {m['n_images']} images and {m['n_captions']} captions ({m['method']}) -> {args.out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from visem.search import SearchIndex

    print(json.dumps(SearchIndex.open(args.index).info(), indent=2))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from visem.search import SearchIndex

    if (args.query is None) == (args.image is None):
        raise ValueError("give a text QUERY or --image PATH (one of them)")
    idx = SearchIndex.open(args.index)
    if args.image is not None:
        res = idx.search_image(args.image, k=args.k)
        if args.json:
            print(json.dumps(res.to_dict(), indent=2))
            return 0
        print("similar images:")
        for r, h in enumerate(res.images, 1):
            print(f"{r:3d}. {h.score:7.4f}  {idx._path_of(h.id)}" + (f"  \"{h.caption}\"" if h.caption else ""))
        print("captions:")
        for r, c in enumerate(res.captions, 1):
            print(f"{r:3d}. {c.score:7.4f}  \"{c.caption}\"  ({idx.name(c.image_id)})")
        return 0
    hits = idx.search_text(args.query, k=args.k, mode=args.mode)
    ex = idx.explain_query(args.query)
    if args.json:
        print(json.dumps({"query": ex, "results": [h.to_dict() for h in hits]}, indent=2))
        return 0
    if ex["unknown"]:
        print("words neither the text tower nor the indexed words know (ignored): " + ", ".join(ex["unknown"]))
    for r, h in enumerate(hits, 1):
        print(f"{r:3d}. {h.score:7.4f}  {idx._path_of(h.id)}" + (f"  \"{h.caption}\"" if h.caption else ""))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from visem.search.options import check_port
    from visem.search.server import bind, serve

    from visem.search import SearchIndex

    check_port(args.port)
    index = SearchIndex.open(args.index)  # a bad index is an error naming its file
    sock = bind(args.host, args.port)  # "address in use" is an error here, before anything says "serving"
    host, port = sock.getsockname()[:2]
    print(f"serving {args.index} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    serve(index, sock=sock)
    return 0
