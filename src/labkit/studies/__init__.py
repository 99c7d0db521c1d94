"""Layer 6: one package per study, called by its notebook. Studies never import each other.

Every study is a package of the same files over :mod:`labkit.studies.base` (its docstring shows the shape):
``data`` (simulate or load, splits) <- ``tasks`` (pure ``@grid_task`` functions, the grid's cache key) <-
``experiment`` (weights resolved once, the grids, gathered into ``Runs``) <- ``tables``, ``figures`` <- ``claims``
(``declare_claims(cfg, **context)``, the paper's claims in the paper's order with their preconditions and effects
of interest, and ``claims(cfg, runs)``) <- ``__init__`` (the lazy face). The kit's one judge
(:func:`labkit.core.claims.judge`, via ``report.conclude``) gives every status; a study never writes one.

``tests/test_study_conformance.py`` checks every study's shape; ``tests/test_claims_conformance.py`` its claims
against the judge's contract.
"""
