"""Throughput and latency of the search server under bounded concurrent load on loopback.

    python bench/bench_server.py INDEX [--queries 500] [--concurrency 8] [--k 10]
    python bench/bench_server.py --tiny            # builds a 12-image index in a temp folder first

Starts ``visem.search.server.serve`` in a subprocess on a free loopback port,
then fires ``--queries`` requests per endpoint with at most ``--concurrency``
in flight (``httpx.AsyncClient``, one connection per worker): text searches
``GET /api/search`` with the index's own captions as queries (read through
``/api/images/{id}/captions``; a fixed word list when it has none), image
queries ``GET /api/similar/{id}`` with random ids, and the thumbnails
``GET /api/images/{id}``. Prints the machine, the command, and per endpoint
the throughput, p50/p90/p99 latency and the number of non-200 answers. A
warm-up of ``--warmup`` requests per endpoint is not counted.

Measured on 2 CPU cores shared with other work (Linux x86_64, Python 3.11,
torch 2.13 CPU; 500 requests per endpoint, k 10, no errors in any run).
``demo``: the ``make demo`` collection (``visem.search.demo.write_demo_collection``:
1518 emoji images, 579 captions; A3VSE, 768-d, exact vector search) built
with ``BuildOptions(steps=300)``; ``tiny``: ``--tiny`` (12 images, 96-d).

=====  ===========  ===============  =========  ======  ======  ======
index  concurrency  endpoint         queries/s  p50 ms  p90 ms  p99 ms
=====  ===========  ===============  =========  ======  ======  ======
demo   8            search (text)        263.8    30.8    36.3    60.1
demo   8            similar (image)      632.4     8.5    18.4   123.9
demo   8            image file           569.0    13.6    20.8    26.8
demo   1            search (text)        195.1     5.1     6.0     6.8
demo   1            similar (image)      534.8     1.8     2.3     2.8
demo   1            image file           628.5     1.4     2.1     2.6
tiny   8            search (text)        350.5    22.7    30.7    44.1
tiny   8            similar (image)     1269.3     4.5    10.1    30.4
tiny   8            image file           535.0    13.1    18.4   118.4
=====  ===========  ===============  =========  ======  ======  ======

``--mixed U``: the scenario of an image search beside text searches: ``U``
clients upload images (``POST /api/search/image``, the index's own image
files, one after the other each) while ``--concurrency`` clients run the
text searches; prints throughput and p50/p99 of each kind. Image decoding
and the CNN run in the server's encoder pool, outside the index's lock, so
uploads no longer stall text queries (with the CNN under the lock, 4
uploaders made text search p50 1.8 s instead of 43 ms).

Client and server share the two cores, so these are lower bounds for a
dedicated machine; p99 moves by 2-4x between runs with the other load. Text
search runs the text encoder under the index's lock, so it gains little from
concurrency (195 -> 264 q/s) while its latency grows with the queue; similar
and file requests need no model call. Text queries are the captions of the
first 200 images.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FALLBACK_QUERIES = ("a red circle", "a blue square", "green", "a face", "cat", "a yellow triangle", "house", "tree")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def build_tiny(folder: Path) -> Path:
    """A 12-image index (four colours x three shapes, ten captioned) under ``folder``."""
    from PIL import Image, ImageDraw

    from visem.search import BuildOptions, build_index

    colors = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (240, 210, 20)}
    images = folder / "images"
    images.mkdir(parents=True)
    rows = []
    for color, rgb in colors.items():
        for shape in ("circle", "square", "triangle"):
            im = Image.new("RGB", (96, 96), "white")
            d = ImageDraw.Draw(im)
            if shape == "circle":
                d.ellipse((16, 16, 80, 80), fill=rgb)
            elif shape == "square":
                d.rectangle((16, 16, 80, 80), fill=rgb)
            else:
                d.polygon([(48, 16), (80, 80), (16, 80)], fill=rgb)
            name = f"{color}_{shape}.png"
            im.save(images / name)
            if name not in ("green_square.png", "yellow_triangle.png"):
                rows.append((name, f"a {color} {shape}"))
    with open(images / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    out = folder / "index"
    build_index(images, images / "captions.csv", out, BuildOptions(steps=300, batch_size=8, embed_dim=32))
    return out


def start_server(index: Path, host: str, port: int) -> subprocess.Popen:
    code = "import sys; from visem.search.server import serve; serve(sys.argv[1], host=sys.argv[2], port=int(sys.argv[3]))"
    return subprocess.Popen([sys.executable, "-c", code, str(index), host, str(port)])


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}")
        try:
            r = httpx.get(base + "/api/info", timeout=2.0)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not answer within the timeout")


async def fire(base: str, urls: list[str], concurrency: int) -> tuple[np.ndarray, int, float]:
    """GET every URL with at most ``concurrency`` in flight; (latencies in s, non-200 count, wall s)."""
    import httpx

    latencies = np.zeros(len(urls))
    errors = 0
    next_i = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60.0) as client:

        async def worker():
            nonlocal next_i, errors
            while next_i < len(urls):
                i = next_i
                next_i += 1
                t = time.perf_counter()
                r = await client.get(urls[i])
                await r.aread()
                latencies[i] = time.perf_counter() - t
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


async def mixed(base: str, text_urls: list[str], uploads: list[tuple[str, bytes]], text_clients: int,
                upload_clients: int) -> dict[str, tuple[np.ndarray, int, float]]:
    """Text searches by ``text_clients`` while ``upload_clients`` post images until the text searches are done."""
    import httpx

    lat: dict[str, list[float]] = {"search (text)": [], "upload (image)": []}
    errors = {"search (text)": 0, "upload (image)": 0}
    next_i = 0
    done = False
    limits = httpx.Limits(max_connections=text_clients + upload_clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120.0) as client:

        async def texter():
            nonlocal next_i
            while next_i < len(text_urls):
                i = next_i
                next_i += 1
                t = time.perf_counter()
                r = await client.get(text_urls[i])
                await r.aread()
                lat["search (text)"].append(time.perf_counter() - t)
                errors["search (text)"] += r.status_code != 200

        async def uploader(j: int):
            i = j
            while not done:
                name, data = uploads[i % len(uploads)]
                i += upload_clients
                t = time.perf_counter()
                r = await client.post("/api/search/image?k=10", files={"file": (name, data)})
                await r.aread()
                lat["upload (image)"].append(time.perf_counter() - t)
                errors["upload (image)"] += r.status_code != 200

        start = time.perf_counter()
        ups = [asyncio.create_task(uploader(j)) for j in range(upload_clients)]
        await asyncio.sleep(0.5)  # the uploads are under way before the first text query
        await asyncio.gather(*(texter() for _ in range(text_clients)))
        done = True
        await asyncio.gather(*ups)
        wall = time.perf_counter() - start
    return {k: (np.asarray(v), errors[k], wall) for k, v in lat.items()}


async def captions_of(base: str, n_images: int, limit: int = 200) -> list[str]:
    import httpx

    out: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        for i in range(min(n_images, limit)):
            r = await client.get(f"/api/images/{i}/captions")
            if r.status_code == 200:
                out.extend(r.json()["captions"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("index", nargs="?", type=Path, help="an index folder (visem index build)")
    p.add_argument("--tiny", action="store_true", help="build a 12-image index in a temp folder and use it")
    p.add_argument("--queries", type=int, default=500, help="requests per endpoint")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed", type=int, default=0, metavar="U",
                   help="also the mixed scenario: U clients uploading images during the text searches")
    args = p.parse_args()
    if (args.index is None) == (not args.tiny):
        p.error("give an INDEX folder or --tiny (one of them)")

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("command: python " + " ".join(sys.argv))
    with tempfile.TemporaryDirectory(prefix="visem-bench-server-") as tmp:
        if args.tiny:
            t = time.perf_counter()
            index = build_tiny(Path(tmp))
            print(f"built tiny index in {time.perf_counter() - t:.1f} s")
        else:
            index = args.index
        port = free_port(args.host)
        base = f"http://{args.host}:{port}"
        proc = start_server(index, args.host, port)
        try:
            info = wait_ready(base, proc)
            n = int(info["n_images"])
            print(f"index: {n} images, {info.get('n_captions')} captions, method {info.get('method')}, "
                  f"vectors {info.get('ann', {}).get('kind')}, dim {info.get('dim')}")
            rng = random.Random(args.seed)
            queries = asyncio.run(captions_of(base, n)) or list(FALLBACK_QUERIES)
            from urllib.parse import urlencode

            def total(make):
                return [make() for _ in range(args.warmup + args.queries)]

            plans = {
                "search (text)": total(lambda: "/api/search?" + urlencode({"q": rng.choice(queries), "k": args.k})),
                "similar (image)": total(lambda: f"/api/similar/{rng.randrange(n)}?k={args.k}"),
                "image file": total(lambda: f"/api/images/{rng.randrange(n)}"),
            }
            print(f"{args.queries} requests per endpoint, concurrency {args.concurrency}, k {args.k}, "
                  f"{len(queries)} distinct text queries")
            print(f"{'endpoint':<18}{'queries/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}")
            for name, urls in plans.items():
                asyncio.run(fire(base, urls[: args.warmup], args.concurrency))
                lat, errors, wall = asyncio.run(fire(base, urls[args.warmup:], args.concurrency))
                p50, p90, p99 = np.percentile(lat * 1000, [50, 90, 99])
                print(f"{name:<18}{len(lat) / wall:>10.1f}{p50:>9.1f}{p90:>9.1f}{p99:>9.1f}{errors:>8d}")
            if args.mixed:
                import httpx

                files = []
                for i in rng.sample(range(n), min(n, 50)):
                    r = httpx.get(f"{base}/api/images/{i}", timeout=30.0)
                    files.append((f"q{i}.png", r.content))
                print(f"mixed: {args.mixed} uploaders during {args.queries} text searches "
                      f"({args.concurrency} clients)")
                res = asyncio.run(mixed(base, plans["search (text)"][args.warmup:], files, args.concurrency,
                                        args.mixed))
                for name, (lat, errors, wall) in res.items():
                    p50, p90, p99 = np.percentile(lat * 1000, [50, 90, 99])
                    print(f"{'mixed ' + name:<24}{len(lat) / wall:>10.1f}{p50:>9.1f}{p90:>9.1f}{p99:>9.1f}"
                          f"{errors:>8d}")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
