"""The sweep engine: study files (:mod:`~stellarexp.tune.studies`), search spaces
(:mod:`~stellarexp.tune.search_space`), study names (:mod:`~stellarexp.tune.naming`), storages and the
ask lock (:mod:`~stellarexp.tune.storages`, :mod:`~stellarexp.tune.journal`), samplers and
pruners, liveness of trials, the ask/tell loop (:mod:`~stellarexp.tune.loop`), the MLflow parent
run (:mod:`~stellarexp.tune.parent_run`), the exported results and a job's own trial
(:mod:`~stellarexp.tune.in_job`). The Hydra plugin ``hydra_plugins.stellarexp_sweeper`` is a thin
adapter over it."""
