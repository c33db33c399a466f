"""The search web app: a JSON API described by OpenAPI and a plain HTML/JS page.

``visem serve INDEX [--port N]`` calls :func:`serve`; :func:`create_app`
builds the FastAPI app over an opened :class:`~visem.search.SearchIndex`, the
same library calls the command line makes.

Routes (``/openapi.json`` describes the JSON ones; ``/docs`` and ``/redoc`` are
off because they load their assets from a CDN):

====================================  ==========================================
``GET /``                             the page (``visem/web/index.html``)
``GET /static/{file}``                the page's assets, only from ``visem/web``
``GET /api/info``                     method, sizes, vector index, limits
``GET /api/search?q=&k=``             text -> images
``POST /api/search/image?k=``         uploaded image (multipart ``file``) ->
                                      similar images and matching captions
``GET /api/similar/{id}?k=``          an indexed image -> similar images and
                                      matching captions
``GET /api/images/{id}``              the image file
``GET /api/images/{id}/captions``     the captions stored for an image
``GET /api/map?n=``                   a 2-D map of a sample of the images and
                                      captions (:mod:`visem.search.map`)
====================================  ==========================================

Input rules: ``k`` in ``[1, MAX_K]`` and ``q`` of 1 to ``MAX_QUERY_CHARS``
characters, checked by validation (422, ``detail`` a one-line message and
``errors`` the per-field list); a query the index cannot answer
(:class:`~visem.search.QueryError`: blank, no known word, unreadable image) is
400 with the index's message; an unknown image id, or a file gone from disk or
outside its indexed folder, is 404; an upload over :data:`MAX_UPLOAD_BYTES` is
413. No route takes a filesystem path from the client: images are addressed by
integer id only, and the file the index names is served only if it resolves
inside one of the index's image roots (the index checks this too).

Concurrency: endpoints are synchronous and run in the server's thread pool.
An uploaded image is decoded (its pixel count checked first,
:mod:`visem.search.upload`) and run through the CNN in a separate pool of
:data:`ENCODE_WORKERS` threads, outside the index's lock, so uploads queue
there and never hold up text queries; :class:`~visem.search.SearchIndex`
runs only its small embedding heads under its lock.

Additions: every request first checks (at most once a second, by the
manifest file's modification time) whether ``visem index add`` wrote a new
generation, and then serves it (:meth:`~visem.search.SearchIndex.reloaded`:
the model is shared, the new files are read once).
"""

from __future__ import annotations

import contextlib
import mimetypes
import socket
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from fastapi import FastAPI, File, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from visem import __version__
from visem.search.index import SearchIndex
from visem.search.types import MAX_K, MAX_QUERY_CHARS, QueryError

__all__ = ["MAX_UPLOAD_BYTES", "create_app", "serve", "running", "web_dir"]

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
"""Largest accepted image upload (413 above it)."""

ENCODE_WORKERS = 2
"""Threads that decode and encode uploaded images (uploads beyond them wait in line)."""

IMAGE_CACHE_CONTROL = "public, max-age=3600"
# Types served inline; anything else (an SVG could carry script) is sent as a download.
_INLINE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff"}
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_NOT_FOUND = "image not found"

def web_dir() -> Path:
    """The folder holding the page (``index.html``, ``app.js``, ``style.css``)."""
    return Path(str(resources.files("visem") / "web"))


# ---------------------------------------------------------------- response models


class ImageResult(BaseModel):
    """One image: its id, name relative to its folder, score, a caption if known, and its URL."""

    id: int
    name: str
    score: float
    caption: str | None = None
    url: str = Field(description="where the image file is served (GET)")


class CaptionResult(BaseModel):
    """One caption and the image it describes."""

    caption: str
    image_id: int
    score: float
    image_url: str


class SearchResponse(BaseModel):
    query: str
    k: int
    mode: str = Field("hybrid", description="hybrid (the index's fusion), dense or lexical")
    used: list[str] = Field(default_factory=list, description="query words the text tower embeds")
    matched: list[str] = Field(default_factory=list, description="query words found in the indexed words")
    ignored: list[str] = Field(default_factory=list, description="query words neither side knows (ignored)")
    results: list[ImageResult]


class MapPoint(BaseModel):
    kind: str = Field(description="image or caption")
    x: float
    y: float
    id: int | None = None
    name: str | None = None
    image_id: int | None = None
    caption: str | None = None


class MapResponse(BaseModel):
    method: str
    n_images: int
    n_captions: int
    points: list[MapPoint]


class SimilarResponse(BaseModel):
    """Image-query results (image to image and image to text)."""

    query_id: int | None = Field(None, description="the indexed image queried, or null for an upload")
    k: int
    images: list[ImageResult]
    captions: list[CaptionResult]


class CaptionsResponse(BaseModel):
    image_id: int
    captions: list[str]


class Limits(BaseModel):
    max_k: int
    max_query_chars: int
    max_upload_bytes: int


class InfoResponse(BaseModel):
    version: str
    method: str | None = None
    n_images: int
    n_captions: int | None = None
    dim: int | None = None
    ann: dict[str, Any] = Field(default_factory=dict)
    limits: Limits


class ErrorResponse(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a query the index cannot answer"},
    404: {"model": ErrorResponse, "description": "unknown image id"},
    422: {"model": ErrorResponse, "description": "invalid parameter (k, q, id)"},
}


# ---------------------------------------------------------------- helpers


def _image_url(image_id: int) -> str:
    return f"/api/images/{int(image_id)}"


def _images(hits) -> list[ImageResult]:
    return [
        ImageResult(id=h.id, name=h.name, score=float(h.score), caption=h.caption, url=_image_url(h.id))
        for h in hits
    ]


def _similar(result, k: int, query_id: int | None) -> SimilarResponse:
    caps = [
        CaptionResult(caption=c.caption, image_id=c.image_id, score=float(c.score), image_url=_image_url(c.image_id))
        for c in result.captions
    ]
    return SimilarResponse(query_id=query_id, k=k, images=_images(result.images), captions=caps)


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body")]
        parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class _BodyTooLarge(Exception):
    pass


_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


class _Guard:
    """ASGI middleware: security headers on every answer; 413 for a request body over ``limit`` bytes.

    The body limit holds whether the size is declared (``Content-Length``) or
    only seen while the body streams in (chunked).
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send_raw):
        if scope["type"] != "http":
            return await self.app(scope, receive, send_raw)

        async def send(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _SECURITY_HEADERS if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send_raw(message)

        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # multipart framing adds a few hundred bytes around the file
        limit = self.limit + 64 * 1024
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                return await _send_413(send, self.limit)
        seen = 0
        exceeded = False
        replied = False
        passthrough = False  # a response begun before the body ran over goes out as is

        async def counting_receive():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            # once the body ran over, whatever the app answers (its parser fails) becomes one 413
            nonlocal replied, passthrough
            if not exceeded or passthrough:
                if message["type"] == "http.response.start":
                    replied = passthrough = True
                return await send(message)
            if not replied:
                replied = True
                await _send_413(send, self.limit)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
            if not replied:
                await _send_413(send, self.limit)


async def _send_413(send, limit: int) -> None:
    body = JSONResponse({"detail": f"upload larger than {limit} bytes"}).body
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- the app


class _Current:
    """The index being served: swapped for its next generation when ``index add`` wrote one."""

    def __init__(self, index: SearchIndex, every: float = 1.0) -> None:
        self.index, self.every = index, every
        self._checked = time.monotonic()
        self._mtime = self._stat()
        self._lock = threading.Lock()
        self.maps: dict[tuple[int, int], dict] = {}

    def _stat(self) -> int | None:
        path = getattr(self.index, "path", None)
        try:
            return (Path(path) / "index.json").stat().st_mtime_ns if path is not None else None
        except OSError:
            return None

    def get(self) -> SearchIndex:
        now = time.monotonic()
        if now - self._checked >= self.every and hasattr(self.index, "reloaded"):
            with self._lock:
                if now - self._checked >= self.every:
                    self._checked = now
                    mtime = self._stat()
                    if mtime != self._mtime:
                        self._mtime = mtime
                        self.index = self.index.reloaded()
        return self.index


def create_app(index: SearchIndex, *, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               reload_every: float = 1.0) -> FastAPI:
    """The FastAPI app serving ``index`` (see the module docstring for the routes)."""
    from concurrent.futures import ThreadPoolExecutor

    current = _Current(index, reload_every)
    encoders = ThreadPoolExecutor(max_workers=ENCODE_WORKERS, thread_name_prefix="visem-encode")
    web = web_dir()

    def roots() -> list[Path]:
        return [Path(r).resolve() for r in current.get().info().get("roots", []) or []]

    app = FastAPI(
        title="visem",
        version=__version__,
        description="Search a folder of images by text, by image, and by example.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.index = index
    app.state.current = current
    app.add_middleware(_Guard, limit=max_upload_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": _validation_message(errors), "errors": errors})

    @app.exception_handler(QueryError)
    async def _bad_query(request: Request, exc: QueryError):
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    def known_id(image_id: int) -> int:
        if not 0 <= image_id < current.get().n_images:
            raise HTTPException(404, _NOT_FOUND)
        return image_id

    K = Query(10, ge=1, le=MAX_K, description=f"number of results, 1 to {MAX_K}")
    ID = PathParam(..., ge=0, description="image id (from a search result)")

    @app.get("/api/info", response_model=InfoResponse, tags=["index"])
    def api_info() -> InfoResponse:
        """What the index holds and the server's limits."""
        index = current.get()
        info = index.info()
        return InfoResponse(
            version=__version__,
            method=info.get("method"),
            n_images=int(index.n_images),
            n_captions=info.get("n_captions"),
            dim=info.get("dim"),
            ann=info.get("ann") or {},
            limits=Limits(max_k=MAX_K, max_query_chars=MAX_QUERY_CHARS, max_upload_bytes=max_upload_bytes),
        )

    @app.get("/api/search", response_model=SearchResponse, responses=_ERRORS, tags=["search"])
    def api_search(
        q: str = Query(..., min_length=1, max_length=MAX_QUERY_CHARS, description="text query"),
        k: int = K,
        mode: str = Query("hybrid", pattern="^(hybrid|dense|lexical)$",
                          description="hybrid: the index's fusion of dense and word-match scores; or one alone"),
    ) -> SearchResponse:
        """Text to image: the ``k`` images closest to the query, and which of its words were used or ignored."""
        index = current.get()
        hits = index.search_text(q, k=k, mode=mode)
        ex = index.explain_query(q)
        return SearchResponse(query=q, k=k, mode=mode, used=ex["used"], matched=ex.get("matched", []),
                              ignored=ex["unknown"], results=_images(hits))

    @app.post("/api/search/image", response_model=SimilarResponse, responses={**_ERRORS, 413: {"model": ErrorResponse, "description": "upload too large"}}, tags=["search"])
    def api_search_image(file: UploadFile = File(..., description="an image file"), k: int = K) -> SimilarResponse:
        """Image to image and image to text, for an uploaded image."""
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "empty upload")
        result = encoders.submit(current.get().search_image, data, k).result()  # the CNN off the request threads
        return _similar(result, k, None)

    @app.get("/api/similar/{image_id}", response_model=SimilarResponse, responses=_ERRORS, tags=["search"])
    def api_similar(image_id: int = ID, k: int = K) -> SimilarResponse:
        """Image to image and image to text, for an indexed image (clicking a result)."""
        known_id(image_id)
        try:
            result = current.get().similar(image_id, k=k)
        except KeyError:
            raise HTTPException(404, _NOT_FOUND) from None
        return _similar(result, k, image_id)

    @app.get(
        "/api/images/{image_id}",
        response_class=FileResponse,
        responses={200: {"content": {"image/*": {}}, "description": "the image file"}, 404: _ERRORS[404], 422: _ERRORS[422]},
        tags=["images"],
    )
    def api_image(image_id: int = ID) -> FileResponse:
        """The image file of an indexed image."""
        known_id(image_id)
        try:
            path = current.get().image_file(image_id)
        except (KeyError, FileNotFoundError):
            raise HTTPException(404, _NOT_FOUND) from None
        path = Path(path).resolve()
        allowed = roots()
        if (allowed and not _inside(path, allowed)) or not path.is_file():
            raise HTTPException(404, _NOT_FOUND)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Cache-Control": IMAGE_CACHE_CONTROL}
        if media_type not in _INLINE_TYPES:
            media_type = "application/octet-stream"
            headers["Content-Disposition"] = "attachment"
        return FileResponse(path, media_type=media_type, headers=headers)

    @app.get("/api/images/{image_id}/captions", response_model=CaptionsResponse, responses=_ERRORS, tags=["images"])
    def api_captions(image_id: int = ID) -> CaptionsResponse:
        """The captions stored for an indexed image (may be empty)."""
        known_id(image_id)
        try:
            caps = current.get().captions_of(image_id)
        except KeyError:
            raise HTTPException(404, _NOT_FOUND) from None
        return CaptionsResponse(image_id=image_id, captions=list(caps))

    @app.get("/api/map", response_model=MapResponse, responses=_ERRORS, tags=["index"])
    def api_map(n: int = Query(300, ge=1, le=5000, description="images in the map (a seeded sample)")) -> MapResponse:
        """A 2-D map of a sample of the images and captions (t-SNE; PCA for tiny indexes).

        t-SNE rather than UMAP here: UMAP's first call in a process compiles its
        kernels (numba), which took minutes on the 2-core machine, too long for a
        page; ``visem index map`` uses UMAP when installed.
        """
        from visem.search.map import MIN_NEIGHBOUR_POINTS, index_map

        index = current.get()
        key = (id(index), n)
        if key not in current.maps:  # computed once per generation and size
            n_caps = max(1, n // 4)
            total = min(n, index.n_images) + min(n_caps, len(index._captions))
            method = "pca" if total < MIN_NEIGHBOUR_POINTS else "tsne"
            current.maps[key] = index_map(index, n_images=n, n_captions=n_caps, method=method)
        return MapResponse(**current.maps[key])

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            web / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=web), name="static")
    return app


# ---------------------------------------------------------------- running it


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket on ``host:port``; ``ValueError`` saying so when the address is in use or not available."""
    import errno

    from visem.search.options import check_port

    check_port(port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot serve on {host}:{port}: unknown host ({exc.strerror})") from None
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    if hasattr(socket, "SO_REUSEADDR"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(infos[0][4])
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"cannot serve on {host}:{port}: address in use (another server? try --port)") from None
        raise ValueError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(index_path: str | Path | SearchIndex, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "warning", sock: socket.socket | None = None) -> None:
    """Serve an index (a path, or an opened one) until interrupted (blocks); on ``sock`` if given (:func:`bind`)."""
    import uvicorn

    index = index_path if isinstance(index_path, SearchIndex) else SearchIndex.open(index_path)
    app = create_app(index)
    sock = sock if sock is not None else bind(host, port)
    uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` from a background thread for the ``with`` block; yields its base URL.

    ``port=0`` takes a free port. Used by the browser test and the benchmark.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="visem-server")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
