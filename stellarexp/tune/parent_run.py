"""MLflow side of an Optuna sweep: one parent run per study, each trial's job a child run.

The jobs open their own runs (stellarexp's ``tracked_run``); the sweeper makes them children by
passing ``tracking.parent_run_id`` and tags ``optuna_study`` / ``optuna_trial`` as overrides. Used
only when the job config has a ``tracking`` node with ``parent_run_id``; any MLflow problem is
logged and the sweep goes on without it. Imports mlflow when used.
"""

from __future__ import annotations

import contextlib
import io
import logging

import yaml
from mlflow.entities import Metric, RunTag
from omegaconf import OmegaConf

from stellarexp.tracking import store
from stellarexp.tracking.display import STUDY_TAG, TRIAL_TAG, sweep_run_name
from stellarexp.tracking.redact import redact
from stellarexp.tracking.stale import process_tags
from stellarexp.tune.search_space import quote
from stellarexp.tune.storages import describe_storage

log = logging.getLogger("stellarexp.sweep")

RUN_ATTR = "mlflow_parent_run_id"


class ParentRun:
    """The study's parent run in the job config's MLflow store."""

    def __init__(self, client, run_id: str, experiment_id: str, study_name: str):
        self.client, self.run_id = client, run_id
        self.experiment_id, self.study_name = experiment_id, study_name

    @classmethod
    def open(cls, cfg, study, plan) -> ParentRun | None:
        """Create the parent run, or reopen the one recorded in the study (resume)."""
        tracking = OmegaConf.select(cfg, "tracking", default=None) if cfg is not None else None
        if tracking is None or "parent_run_id" not in tracking:
            return None
        try:

            client = store.connect(tracking.get("uri"))
            artifact_root = tracking.get("artifact_root") if store.is_local(client.tracking_uri) else None
            exp_id = store.ensure_experiment(client, tracking.get("experiment") or store.DEFAULT_EXPERIMENT,
                                             artifact_root)

            run_id = study.user_attrs.get(RUN_ATTR)
            if run_id:
                try:
                    client.update_run(run_id, status="RUNNING")
                    for key, value in process_tags().items():  # a later job ends it if we die
                        client.set_tag(run_id, key, value)
                except Exception:  # noqa: BLE001 - recorded in another tracking store
                    run_id = None
            if not run_id:
                tags = {STUDY_TAG: study.study_name, "stage": "sweep", "sweep_role": "parent",
                        "sweep_sampler": plan.sampler, "sweep_direction": plan.direction,
                        "sweep_metric": str(plan.metric or "return value"),
                        "sweep_storage": describe_storage(plan.storage), **process_tags()}
                for key in ("model.name", "features.name", "target", "split.name", "data.name"):
                    value = OmegaConf.select(cfg, key, default=None)
                    if value is not None:
                        tags[key.split(".")[0]] = str(value)
                run_id = client.create_run(exp_id, run_name=sweep_run_name(cfg), tags=tags).info.run_id
                study.set_user_attr(RUN_ATTR, run_id)
                space = {k: p.expression for k, p in plan.space.items()}
                client.log_text(run_id, yaml.safe_dump(redact({"study": study.study_name, "params": space,
                                                               "overrides": plan.base_overrides}),
                                                       sort_keys=False), "sweep/search_space.yaml")
            log.info("MLflow parent run %s for study %s", run_id, study.study_name)
            return cls(client, run_id, exp_id, study.study_name)
        except Exception as exc:  # noqa: BLE001 - tracking must not stop a sweep
            log.warning("no MLflow parent run (%s: %s)", type(exc).__name__, exc)
            return None

    def trial_overrides(self, number: int) -> list[str]:
        """Overrides that make trial ``number``'s job a child of this run.

        The child run logs its config (``config/config.yaml``), its trial's values among its
        params and its command line in the ``overrides`` tag (no ``config/overrides.yaml``); this
        run holds the study's overrides and search space.
        """
        return [f"tracking.parent_run_id={self.run_id}",
                f"++tracking.tags.{STUDY_TAG}={quote(self.study_name)}",
                f"++tracking.tags.{TRIAL_TAG}={number}",
                "++tracking.config_artifacts=false"]

    def _children(self, extra: str = ""):
        query = f"tags.{STUDY_TAG} = '{self.study_name}' and tags.mlflow.parentRunId = '{self.run_id}'"
        return self.client.search_runs([self.experiment_id], query + extra, max_results=5000)

    def mark_killed(self, numbers) -> None:
        """End the still-RUNNING child runs of trials failed as dead as KILLED."""
        wanted = {str(n) for n in numbers}
        try:
            for run in self._children(" and attributes.status = 'RUNNING'"):
                if run.data.tags.get(TRIAL_TAG) in wanted:
                    self.client.set_terminated(run.info.run_id, "KILLED")
        except Exception as exc:  # noqa: BLE001
            log.warning("could not mark runs of dead trials KILLED (%s)", exc)

    def finish(self, study, summary: dict | None) -> None:
        """Log best value, parameters, trial and run id, and two figures; end the run."""
        try:
            trials = study.get_trials(deepcopy=False)
            counts = {f"sweep/n_{s.lower()}": float(sum(t.state.name == s for t in trials))
                      for s in ("COMPLETE", "PRUNED", "FAIL")}
            metrics = [Metric(k, v, 0, len(trials)) for k, v in counts.items()]
            tags = []
            children = {r.data.tags.get(TRIAL_TAG): r for r in self._children()}
            by_number = {str(t.number): t for t in trials}
            for number, run in children.items():  # the Optuna outcome on each child run
                trial = by_number.get(number)
                if trial is not None and run.data.tags.get("optuna_state") != trial.state.name:
                    self.client.set_tag(run.info.run_id, "optuna_state", trial.state.name)
            if summary is not None:
                if isinstance(summary["best_value"], float):
                    metrics.append(Metric("sweep/best_value", summary["best_value"], 0, len(trials)))
                # best parameters as tags: params are immutable and the best changes on resume
                tags += [RunTag("best_trial", str(summary["best_trial"]))]
                tags += [RunTag(f"best.{k}", str(v)) for k, v in summary["params"].items()]
                best = children.get(str(summary["best_trial"]))
                if best is not None:
                    tags.append(RunTag("best_run_id", best.info.run_id))
                    summary = {**summary, "best_run_id": best.info.run_id}
                self.client.log_text(self.run_id, yaml.safe_dump(summary, sort_keys=False), "sweep/best.yaml")
            self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
            self._figures(study)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow parent run %s incomplete (%s: %s)", self.run_id, type(exc).__name__, exc)
        with contextlib.suppress(Exception):
            self.client.set_terminated(self.run_id, "FINISHED")

    def _figures(self, study) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm

        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        plots = {"sweep/optimization_history.png": ovm.plot_optimization_history}
        if len(complete) >= 2 and len({tuple(sorted(t.params.items())) for t in complete}) > 1:
            plots["sweep/param_importances.png"] = ovm.plot_param_importances
        for name, plot in plots.items():
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # experimental-API warnings
                    ax = plot(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                self.client.log_figure(self.run_id, fig, name)
                plt.close(fig)
            except Exception as exc:  # noqa: BLE001
                log.warning("figure %s not drawn (%s)", name, exc)
