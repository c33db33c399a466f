"""Search: from a folder of images and a few captions to a searchable index.

:func:`build_index` trains a retrieval model on what supervision it finds
(VSE++ when every image is captioned, A3VSE with pseudo captions when only
some are, VSA-AE-MMD with ``source=`` a paired index) and writes an index
folder; :class:`SearchIndex` opens one to search it by text or by image, add
images, and evaluate held-out captions. :mod:`visem.search.ann` holds the
vector index (faiss), :mod:`visem.search.server` the web app.
"""

from visem.search.index import (
    BuildOptions,
    BuildReport,
    CaptionHit,
    Hit,
    IndexFileError,
    QueryError,
    SearchIndex,
    SimilarResult,
    build_index,
)

__all__ = [
    "BuildOptions",
    "BuildReport",
    "CaptionHit",
    "Hit",
    "IndexFileError",
    "QueryError",
    "SearchIndex",
    "SimilarResult",
    "build_index",
]
