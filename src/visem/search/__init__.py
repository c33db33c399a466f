"""Search: from a folder of images and a few captions to a searchable index.

:func:`build_index` trains a retrieval model on what supervision it finds
(VSE++ when every image is captioned, A3VSE with pseudo captions when only
some are, VSA-AE-MMD with ``source=`` a paired index) and writes an index
folder; :class:`SearchIndex` opens one to search it by text or by image, add
images, and evaluate held-out captions.

Modules, one per stage (each importable on its own; none imports the CLI):

=========================  ======================================================
``types``                  options, reports, results, errors, limits
``collection``             image folder + caption file -> unique images, pairs,
                           tags; pseudo captions
``methods``                which model to train, how it consumes data
``features``               image features of a collection (feature store)
``training``               samplers per training kind, step budget, trainer run
``embedding``              the trained model's image and caption embeddings
``ann``                    the faiss vector index
``folder``                 the index folder on disk: manifest, files, generations
``build``                  :func:`build_index`: the stages in sequence, resumable
``index``                  :class:`SearchIndex`: the opened index
``server`` / ``demo``      the web app, ``make demo``
=========================  ======================================================
"""

from visem.search.build import build_index
from visem.search.index import SearchIndex
from visem.search.types import (
    BuildOptions,
    BuildReport,
    CaptionHit,
    Hit,
    IndexFileError,
    QueryError,
    SimilarResult,
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
