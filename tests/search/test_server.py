"""The search web app over a real tiny index: endpoints, limits, errors, path traversal.

The index is built once per module from twelve drawn PNGs (four colours x
three shapes; ten captioned ``a <colour> <shape>``, two not) - about ten
seconds with EfficientNet-Lite0 features and 300 training steps.
"""

from __future__ import annotations

import csv
import http.client
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, PngImagePlugin

from visem.search import BuildOptions, SearchIndex, build_index
from visem.search.types import MAX_K, MAX_QUERY_CHARS
from visem.search.server import MAX_UPLOAD_BYTES, create_app, running, serve

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (240, 210, 20)}
SHAPES = ("circle", "square", "triangle")
UNCAPTIONED = {"green_square.png", "yellow_triangle.png"}
SECRET = "OUTSIDE-SECRET-7f3a"


def draw(shape: str, rgb: tuple[int, int, int], size: int = 96) -> Image.Image:
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    m = size // 6
    if shape == "circle":
        d.ellipse((m, m, size - m, size - m), fill=rgb)
    elif shape == "square":
        d.rectangle((m, m, size - m, size - m), fill=rgb)
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=rgb)
    return im


def write_collection(root: Path) -> dict[str, str | None]:
    """Twelve PNGs and ``captions.csv``; returns {file name: caption or None}."""
    root.mkdir(parents=True, exist_ok=True)
    captions: dict[str, str | None] = {}
    for color, rgb in COLORS.items():
        for shape in SHAPES:
            name = f"{color}_{shape}.png"
            draw(shape, rgb).save(root / name)
            captions[name] = None if name in UNCAPTIONED else f"a {color} {shape}"
    with open(root / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows((n, c) for n, c in captions.items() if c)
    return captions


def build_tiny_index(tmp: Path) -> tuple[Path, Path, dict[str, str | None]]:
    """(images folder, index folder, captions) for a tiny index built under ``tmp``."""
    images = tmp / "images"
    captions = write_collection(images)
    out = tmp / "index"
    build_index(images, images / "captions.csv", out, BuildOptions(steps=300, batch_size=8, embed_dim=32))
    return images, out, captions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search-server")
    images, out, captions = build_tiny_index(tmp)
    index = SearchIndex.open(out)
    ids = {index.name(i): i for i in range(index.n_images)}
    outside = tmp / "outside"
    outside.mkdir()
    meta = PngImagePlugin.PngInfo()
    meta.add_text("comment", SECRET)
    draw("circle", (0, 0, 0)).save(outside / "secret.png", pnginfo=meta)
    (outside / "secret.txt").write_text(SECRET)
    return {"images": images, "index_dir": out, "index": index, "ids": ids, "captions": captions, "outside": outside}


@pytest.fixture(scope="module")
def client(tiny):
    with TestClient(create_app(tiny["index"])) as c:
        yield c


def png_bytes(path: Path) -> bytes:
    return path.read_bytes()


# ------------------------------------------------------------------ happy paths


def test_page_and_its_assets(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    for marker in ('id="search-form"', 'id="q"', 'id="results"', 'id="message"', "/static/app.js"):
        assert marker in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "http://" not in r.text and "https://" not in r.text  # nothing fetched from elsewhere
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "innerHTML" not in js.text  # data goes in through textContent only
    assert client.get("/static/style.css").status_code == 200


def test_info(client, tiny):
    r = client.get("/api/info")
    assert r.status_code == 200
    info = r.json()
    assert info["n_images"] == 12 and info["n_captions"] == 10
    assert info["method"] == tiny["index"].method
    assert info["limits"] == {"max_k": MAX_K, "max_query_chars": MAX_QUERY_CHARS, "max_upload_bytes": MAX_UPLOAD_BYTES}
    assert str(tiny["images"]) not in r.text  # no filesystem paths leave the server


@pytest.mark.parametrize("name", ["red_circle.png", "blue_square.png", "green_triangle.png", "yellow_circle.png"])
def test_search_finds_the_captioned_image_at_the_top(client, tiny, name):
    # A 12-image index trained 300 steps puts the captioned image first for 9 or 10 of its 10 captions,
    # depending on the seed (seeds 0-3 measured); the API is what this test checks, so the image must be
    # in the top two, with its own id, caption and URL, and the first hit must have the caption's shape.
    caption = tiny["captions"][name]
    r = client.get("/api/search", params={"q": caption, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == caption and body["k"] == 5
    results = body["results"]
    assert len(results) == 5
    top = [h["name"] for h in results[:2]]
    assert name in top, top
    assert results[0]["name"].split("_")[1] == name.split("_")[1]
    hit = results[top.index(name)]
    assert hit["id"] == tiny["ids"][name]
    assert hit["caption"] == caption
    assert hit["url"] == f"/api/images/{tiny['ids'][name]}"
    scores = [h["score"] for h in results]
    assert scores == sorted(scores, reverse=True)


def test_search_matches_the_library_call(client, tiny):
    hits = tiny["index"].search_text("a blue triangle", k=12)
    body = client.get("/api/search", params={"q": "a blue triangle 猫", "k": 12}).json()
    r = body["results"]
    assert [(h["id"], h["name"], h["caption"]) for h in r] == [(h.id, h.name, h.caption) for h in hits]
    assert [h["score"] for h in r] == pytest.approx([h.score for h in hits])
    assert body["ignored"] == ["猫"] and body["mode"] == "hybrid"  # reported as the command line reports it
    assert body["used"] == ["a", "blue", "triangle"] and body["matched"] == ["a", "blue", "triangle"]
    dense = client.get("/api/search", params={"q": "a blue triangle", "k": 12, "mode": "dense"}).json()["results"]
    assert [h["id"] for h in dense] == [h.id for h in tiny["index"].search_text("a blue triangle", 12, mode="dense")]
    assert client.get("/api/search", params={"q": "red", "mode": "nope"}).status_code == 422
    uncaptioned = [h for h in r if h["name"] in UNCAPTIONED]
    assert len(uncaptioned) == 2 and all(h["caption"] is None for h in uncaptioned)


def test_similar_images_and_captions(client, tiny):
    qid = tiny["ids"]["red_circle.png"]
    r = client.get(f"/api/similar/{qid}", params={"k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query_id"] == qid and body["k"] == 4
    assert len(body["images"]) == 4 and len(body["captions"]) == 4
    assert qid not in [h["id"] for h in body["images"]]
    assert body["images"][0]["name"].endswith("_circle.png")  # nearest by image features: another circle
    expected = tiny["index"].similar(qid, k=4)
    assert [h["id"] for h in body["images"]] == [h.id for h in expected.images]
    assert [c["caption"] for c in body["captions"]] == [c.caption for c in expected.captions]
    for c in body["captions"]:
        assert c["image_url"] == f"/api/images/{c['image_id']}"
        assert tiny["index"].captions_of(c["image_id"]).count(c["caption"]) == 1


def test_search_by_uploaded_image(client, tiny):
    data = png_bytes(tiny["images"] / "blue_triangle.png")
    r = client.post("/api/search/image", params={"k": 3}, files={"file": ("q.png", data, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query_id"] is None
    assert body["images"][0]["name"] == "blue_triangle.png"  # the same picture is its own nearest
    assert body["images"][0]["score"] == pytest.approx(2.0, abs=1e-3)  # learned + raw cosine
    assert len(body["images"]) == 3 and len(body["captions"]) == 3


def test_image_file(client, tiny):
    i = tiny["ids"]["green_square.png"]
    r = client.get(f"/api/images/{i}")
    assert r.status_code == 200
    assert r.content == (tiny["images"] / "green_square.png").read_bytes()
    assert r.headers["content-type"] == "image/png"
    assert "max-age" in r.headers["cache-control"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_captions_of_an_image(client, tiny):
    r = client.get(f"/api/images/{tiny['ids']['red_circle.png']}/captions")
    assert r.status_code == 200
    assert r.json() == {"image_id": tiny["ids"]["red_circle.png"], "captions": ["a red circle"]}
    r = client.get(f"/api/images/{tiny['ids']['yellow_triangle.png']}/captions")
    assert r.json()["captions"] == []


def test_openapi_describes_the_api(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    from visem import __version__

    assert spec["info"]["title"] == "visem" and spec["info"]["version"] == __version__
    paths = spec["paths"]
    for path, method in [
        ("/api/info", "get"),
        ("/api/search", "get"),
        ("/api/search/image", "post"),
        ("/api/similar/{image_id}", "get"),
        ("/api/images/{image_id}", "get"),
        ("/api/images/{image_id}/captions", "get"),
    ]:
        assert method in paths[path], path
    search = paths["/api/search"]["get"]
    k = next(p for p in search["parameters"] if p["name"] == "k")
    assert k["schema"]["minimum"] == 1 and k["schema"]["maximum"] == MAX_K
    q = next(p for p in search["parameters"] if p["name"] == "q")
    assert q["schema"]["maxLength"] == MAX_QUERY_CHARS
    assert "SearchResponse" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    "url, field",
    [
        ("/api/search?q=red&k=0", "k"),
        ("/api/search?q=red&k=101", "k"),
        ("/api/search?q=red&k=ten", "k"),
        ("/api/search?q=", "q"),
        ("/api/search", "q"),
        ("/api/search?q=" + "a" * (MAX_QUERY_CHARS + 1), "q"),
        ("/api/similar/abc", "image_id"),
        ("/api/similar/1.5", "image_id"),
        ("/api/similar/-1", "image_id"),
        ("/api/similar/0?k=1000", "k"),
        ("/api/images/abc", "image_id"),
        ("/api/images/-1", "image_id"),
        ("/api/images/1e3/captions", "image_id"),
    ],
)
def test_invalid_parameters_are_422_with_a_message(client, url, field):
    r = client.get(url)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{field}: ")
    assert any(e["loc"][-1] == field for e in r.json()["errors"])


@pytest.mark.parametrize("q, words", [("   ", "empty"), ("!!! ???", "no word")])
def test_unanswerable_query_is_400_with_the_index_message(client, q, words):
    r = client.get("/api/search", params={"q": q})
    assert r.status_code == 400
    assert words in r.json()["detail"]


@pytest.mark.parametrize(
    "url", ["/api/images/9999", "/api/images/12", "/api/images/9999/captions", "/api/similar/12", "/api/similar/99999999999999999999"]
)
def test_unknown_image_id_is_404(client, url):
    r = client.get(url)
    assert r.status_code in (404, 422)
    if url != "/api/similar/99999999999999999999":
        assert r.status_code == 404 and r.json()["detail"] == "image not found"


def test_upload_of_a_non_image_is_400(client):
    r = client.post("/api/search/image", files={"file": ("notes.png", b"this is not a picture", "image/png")})
    assert r.status_code == 400
    assert "not a readable image" in r.json()["detail"]
    r = client.post("/api/search/image", files={"file": ("empty.png", b"", "image/png")})
    assert r.status_code == 400 and r.json()["detail"] == "empty upload"
    r = client.post("/api/search/image", data={"other": "x"})
    assert r.status_code == 422 and r.json()["detail"].startswith("file: ")


def test_upload_over_the_limit_is_413(client):
    just_over = b"\x89PNG" + b"\0" * (MAX_UPLOAD_BYTES - 3)  # checked by the endpoint
    r = client.post("/api/search/image", files={"file": ("big.png", just_over, "image/png")})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    far_over = b"\0" * (MAX_UPLOAD_BYTES + 200_000)  # refused from Content-Length before parsing
    r = client.post("/api/search/image", files={"file": ("big.png", far_over, "image/png")})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_streamed_upload_over_the_limit_is_413(tiny):
    """A chunked body (no Content-Length) is counted as it arrives."""
    app = create_app(tiny["index"], max_upload_bytes=1000)
    boundary = "visemboundary"

    def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        for _ in range(100):
            yield b"\0" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    with TestClient(app) as c:
        r = c.post("/api/search/image", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413


def test_a_file_gone_from_disk_is_404(client, tiny):
    path = tiny["images"] / "blue_circle.png"
    moved = path.with_suffix(".moved")
    path.rename(moved)
    try:
        r = client.get(f"/api/images/{tiny['ids']['blue_circle.png']}")
        assert r.status_code == 404
    finally:
        moved.rename(path)
    assert client.get(f"/api/images/{tiny['ids']['blue_circle.png']}").status_code == 200


# ------------------------------------------------------------------ path traversal

TRAVERSALS = [
    "/api/images/..%2F..%2Fetc%2Fpasswd",
    "/api/images/..%2f..%2f..%2f..%2fpyproject.toml",
    "/api/images/%2e%2e/%2e%2e/pyproject.toml",
    "/api/images/0/..%2F..%2Foutside%2Fsecret.txt",
    "/api/images/-1",
    "/static/../../pyproject.toml",
    "/static/../__init__.py",
    "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
    "/static/%2e%2e/__init__.py",
    "/static/..%2F__init__.py",
    "/static/..%2f..%2f..%2fpyproject.toml",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/static/....//....//pyproject.toml",
]
LEAKS = ("[build-system]", "__version__", "root:x:0:0", SECRET)


@pytest.fixture(scope="module")
def live(tiny):
    with running(create_app(tiny["index"])) as base:
        yield urlsplit(base)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_through_urls_is_refused(live, path):
    """Sent byte for byte over a socket to the running server (an HTTP client would normalise ``..``)."""
    conn = http.client.HTTPConnection(live.hostname, live.port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read().decode("latin-1")
    conn.close()
    assert 400 <= resp.status < 500, (path, resp.status)
    for leak in LEAKS:
        assert leak not in body, (path, leak)


@pytest.mark.parametrize("path, marker", [("/static/app.js", "textContent"), ("/static/%61pp.js", "textContent"), ("/api/images/0", "PNG")])
def test_raw_requests_reach_the_files_they_may(live, path, marker):
    """Control for the traversal cases: the same raw requests do fetch files that are meant to be served."""
    conn = http.client.HTTPConnection(live.hostname, live.port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read().decode("latin-1")
    conn.close()
    assert resp.status == 200 and marker in body


def test_symlink_out_of_the_indexed_folder_is_404(client, tiny):
    name = "yellow_square.png"
    path = tiny["images"] / name
    keep = path.with_suffix(".keep")
    shutil.move(path, keep)
    os.symlink(tiny["outside"] / "secret.png", path)
    try:
        r = client.get(f"/api/images/{tiny['ids'][name]}")
        assert r.status_code == 404
        assert SECRET.encode() not in r.content
    finally:
        path.unlink()
        shutil.move(keep, path)
    assert client.get(f"/api/images/{tiny['ids'][name]}").status_code == 200


class _UncheckedFiles:
    """An index whose ``image_file`` trusts whatever it names: the server's own root check must hold."""

    def __init__(self, index: SearchIndex, target: Path):
        self._index, self._target = index, target

    def __getattr__(self, name):
        return getattr(self._index, name)

    def info(self):
        return self._index.info()

    @property
    def n_images(self):
        return self._index.n_images

    def image_file(self, image_id):
        return self._target


def test_server_checks_the_root_itself(tiny):
    app = create_app(_UncheckedFiles(tiny["index"], tiny["outside"] / "secret.png"))
    with TestClient(app) as c:
        r = c.get("/api/images/0")
    assert r.status_code == 404 and SECRET.encode() not in r.content


def test_serve_refuses_a_folder_that_is_not_an_index(tmp_path):
    from visem.search import IndexFileError

    with pytest.raises(IndexFileError):
        serve(tmp_path, port=0)


def test_no_500_for_odd_input(client):
    odd = [
        "/api/search?q=%00%ff",
        "/api/search?q=%F0%9F%98%80",
        "/api/search?q=red&k=",
        "/api/search?q=red&k=1&k=2",
        "/api/search?q=" + "%E2%80%AE" * 50,
        "/api/similar/%20",
        "/api/images/0x1",
        "/api/images/%00",
        "/api/nope",
    ]
    for url in odd:
        r = client.get(url)
        assert 200 <= r.status_code < 500, (url, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["detail"]
    r = client.post("/api/search/image", content=b"junk", headers={"content-type": "multipart/form-data; boundary=x"})
    assert 400 <= r.status_code < 500
    r = client.post("/api/search/image", content=b"junk", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
