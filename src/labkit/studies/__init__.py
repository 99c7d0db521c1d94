"""Layer 4: one module per study, called by its notebook. Studies never import each other.

Every study module reads like the paper's method section, in the same order:

1. **data**: ``make_data(cfg)`` simulates or loads (``cfg.data_source``/``cfg.data_root``), with splits and
   data figures; real formats are read by ``labkit.data`` loaders; bad input fails before any work.
2. **the grid's task**: one module-level task function (``def run_task(**params) -> dict``) and
   ``run(cfg, data) -> results``, which builds a :class:`labkit.core.grid.Grid` of condition x seed tasks and runs
   it with ``cfg.executor``/``cfg.workers``/``cfg.scheduler`` (records cached, resumable); models go to
   ``labkit.core.device.resolve_device(cfg.device)``.
3. **claims**: ``declare_claims(cfg, **context) -> list[labkit.core.claims.Claim]``, the paper's claims in the
   paper's order, each with its preconditions, declared without results (with no context every arm is
   assumed available; the notebook passes what is unavailable, e.g. missing weights, as context), and
   ``claim_tables(results) -> dict[str, DataFrame]``, the tidy tables they are judged on. The kit's one judge
   (:func:`labkit.core.claims.judge`, via ``report.claims(...)``) gives every status; a study never writes one.
4. **tables** and 5. **figures**.

``tests/test_claims_conformance.py`` checks every study's claims against the judge's contract.
"""
