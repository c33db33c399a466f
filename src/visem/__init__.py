"""visem: joint visual-semantic embeddings when paired annotations are scarce.

The library is organised as small pure-function losses and metrics
(:mod:`visem.losses`, :mod:`visem.metrics`), data readers and protocol
samplers (:mod:`visem.data`), feature extractors (:mod:`visem.features`),
models registered by name and built from typed configs (:mod:`visem.models`),
a trainer (:mod:`visem.train`) and paper reproductions
(:mod:`visem.experiments`). The ``visem`` command line is a thin layer on top
(:mod:`visem.cli`).
"""

__version__ = "0.1.0"
