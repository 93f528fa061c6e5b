"""Run a plan under one MLflow parent run, reusing every step that already finished.

Each train step is composed, hashed (:func:`stellarexp.tracking.job_identity.job_config_hash`:
the config without volatile keys plus the data fingerprint) and looked up: a FINISHED run with the
same ``config_hash`` tag is reused, otherwise the job runs in this process as a child of the
parent run. Inputs of later steps are pinned to the runs of earlier ones (``refs``), so their
hashes change when an earlier step is re-run. A reproduce that stopped (error, Ctrl-C, kill) and
is started again reopens its parent run and continues with the first step that has no finished
run. The parent run's records are kept by :mod:`~stellarexp.reproduce.parent_run`, a step job's
overrides built by :mod:`~stellarexp.reproduce.step_overrides`, the printed tables by
:mod:`~stellarexp.reproduce.summary`.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from stellarexp.data import pipeline
from stellarexp.data.fingerprint import data_fingerprint
from stellarexp.home import mlruns_dir, outputs_dir
from stellarexp.reproduce import jobs, parent_run, plan, step_overrides, summary
from stellarexp.reproduce.plan import ReproduceError, Step
from stellarexp.reproduce.summary import StepResult
from stellarexp.reproduce.tune import study_plan, tuned_overrides
from stellarexp.tracking import store

log = logging.getLogger("stellarexp.reproduce")


def _last_active_run():
    """The process's last MLflow run if it belongs to the current store, else ``None``.

    ``mlflow.last_active_run`` remembers the id across tracking URIs and raises when that run is
    in another store (an earlier job of this process logged elsewhere).
    """
    try:
        return mlflow.last_active_run()
    except MlflowException:
        return None


class Reproduce:
    """One reproduce of ``cfg`` (the composed ``stellarexp/conf/reproduce.yaml``).

    Parameters
    ----------
    cfg : omegaconf.DictConfig
    output_dir : path-like
        The reproduce job's folder; step outputs go to ``<outputs>/reproduce/<experiment>/steps``.
    """

    def __init__(self, cfg, output_dir):
        self.cfg = cfg
        self.name = str(cfg.experiment.name)
        self.output_dir = Path(output_dir)
        self.steps_dir = outputs_dir() / "reproduce" / self.name / "steps"
        self.trainer = plan.resolve_trainer(cfg.accelerator)
        self.steps = plan.build_plan(cfg, self.trainer)
        rerun = cfg.get("rerun") or []
        self.rerun = {s.name for s in self.steps} if "all" in rerun else {str(r) for r in rerun}
        unknown = self.rerun - {s.name for s in self.steps}
        if unknown:
            raise ReproduceError(f"rerun names unknown step(s) {sorted(unknown)}; steps: "
                                 f"{[s.name for s in self.steps]}")
        self.results: dict[str, StepResult] = {}
        self.fingerprint: str | None = None
        self._client = None
        self._lookup = True
        self.report_text: str | None = None
        self.parent_id: str | None = None
        self.experiment_id: str | None = None

    # ---------------------------------------------------------------- tracking

    @property
    def tracking_overrides(self) -> list[str]:
        """The overrides that send the steps' jobs to this reproduce's store and experiment."""
        return step_overrides.tracking_overrides(self.cfg)

    @property
    def client(self):
        if self._client is None:
            tcfg = self.cfg.get("tracking") or {}
            self._client = store.connect(tcfg.get("uri"))
            probe = jobs.compose_job([*self.steps[0].overrides, *self.tracking_overrides])
            root = (probe.tracking.get("artifact_root")
                    if store.is_local(mlflow.get_tracking_uri()) else None)
            self.experiment_id = store.ensure_experiment(
                self._client, tcfg.get("experiment") or store.DEFAULT_EXPERIMENT, root)
        return self._client

    def find_finished(self, config_hash: str):
        """The newest FINISHED run with ``config_hash`` in the experiment, or ``None``."""
        client = self.client
        query = f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'"
        runs = client.search_runs([self.experiment_id], query, max_results=1,
                                  order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    def open_parent(self) -> bool:
        """Create the parent run, or reopen the unfinished one of this plan; True if reopened."""
        client = self.client  # looks up the experiment first
        self.parent_id, resumed = parent_run.open_parent(client, self.experiment_id, self.cfg,
                                                         self.name, self.trainer)
        return resumed

    def _record(self, result: StepResult) -> None:
        self.results[result.step] = result
        if self.parent_id is None:
            return
        parent_run.record_step(self.client, self.parent_id, result, self.results)

    def _end_parent(self, status: str, error: str | None = None) -> None:
        if self.parent_id is None:
            return
        parent_run.end_parent(self.client, self.parent_id, self.results, status, error)

    # ---------------------------------------------------------------- steps

    def _job_overrides(self, step: Step, dry: bool) -> tuple[list[str], list[str]]:
        """(overrides of the step's job, names of earlier steps it waits for without a run)."""
        return step_overrides.job_overrides(step, self.results, self.name, self.parent_id,
                                            self.tracking_overrides, dry)

    def data_step(self, step: Step, dry: bool) -> StepResult:
        """Simulate (synthetic) and build the dataset file when absent or stale."""
        t0 = time.time()
        data_cfg = jobs.compose_job(step.overrides).data
        if dry:
            self.fingerprint = data_fingerprint(data_cfg)
            note = (f"dataset {data_cfg.get('dataset_path')} exists" if self.fingerprint else
                    "would simulate and build the dataset")
            return StepResult(step.name, step.stage, "planned", note=note)
        before = data_fingerprint(data_cfg)
        if "dataset_path" in data_cfg:
            try:
                path = pipeline.build(data_cfg, progress=bool(self.cfg.progress))
            except pipeline.UserInputError as exc:
                raise ReproduceError(f"step '{step.name}': {exc}") from exc
            note = str(path)
        else:
            note = "table data: read by each job"
        self.fingerprint = data_fingerprint(data_cfg)
        if self.parent_id:
            self.client.set_tag(self.parent_id, "data_fingerprint", self.fingerprint or "unknown")
        status = "reused" if before is not None and before == self.fingerprint else "ran"
        return StepResult(step.name, step.stage, status, seconds=round(time.time() - t0, 1),
                          note=f"{note} (fingerprint {str(self.fingerprint)[:12]})")

    def train_step(self, step: Step, dry: bool) -> StepResult:
        """Reuse the step's finished run, or run its job (tuning a baseline first)."""
        job_args, waiting = self._job_overrides(step, dry)
        job_cfg = jobs.compose_job(job_args)
        if self.cfg.get("tune") and step.stage == "baseline":
            if dry:
                studies = ", ".join(f"{e['name']} ({e['n_trials']} trials)" for e in study_plan(
                    job_cfg, step.overrides, self.cfg.get("tune_trials")))
                return StepResult(step.name, step.stage, "planned", note=f"tune {studies}")
            job_args = job_args + tuned_overrides(job_cfg, step.overrides,
                                                  self.cfg.get("tune_trials"), self.client,
                                                  self.parent_id)
            job_cfg = jobs.compose_job(job_args)
        if dry and (waiting or self.fingerprint is None or not self._lookup):
            after = f" after {', '.join(dict.fromkeys(waiting))}" if waiting else ""
            return StepResult(step.name, step.stage, "planned", note=f"would run{after}")
        digest = jobs.config_hash(job_cfg)
        old = None if step.name in self.rerun else self.find_finished(digest)
        if old is not None:
            return StepResult(step.name, step.stage, "planned" if dry else "reused",
                              old.info.run_id, digest,
                              note=f"finished run {old.info.run_id}" if dry else "")
        if dry:
            return StepResult(step.name, step.stage, "planned", None, digest, note="would run")
        log.info("step %s: stage=%s (%s)", step.name, step.stage, " ".join(step.overrides))
        t0 = time.time()
        before = _last_active_run()
        try:
            run_id = jobs.run_job(job_cfg, self.steps_dir / f"{step.name}-{digest}")
        except BaseException as exc:
            last = _last_active_run()
            run_id = last.info.run_id if last and (before is None or last.info.run_id
                                                   != before.info.run_id) else None
            self._record(StepResult(step.name, step.stage, "failed", run_id, digest,
                                    round(time.time() - t0, 1), f"{type(exc).__name__}: {exc}"))
            raise
        tag = self.client.get_run(run_id).data.tags.get("config_hash")
        if tag != digest:  # would break skip-if-finished: say so rather than re-run silently
            log.warning("step %s: run %s carries config_hash %s, expected %s; it will not be "
                        "reused by a later reproduce", step.name, run_id, tag, digest)
        return StepResult(step.name, step.stage, "ran", run_id, digest,
                          round(time.time() - t0, 1))

    # ---------------------------------------------------------------- whole plan

    def dry_run(self) -> list[StepResult]:
        """Compose every step and say what would run and what would be reused; run nothing."""
        missing = {s.name for s in plan.unregistered(self.steps)}
        local = store.is_local(store.resolve_uri((self.cfg.get("tracking") or {}).get("uri")))
        # an absent local store holds no run to reuse: do not create it for a dry run
        self._lookup = not local or (mlruns_dir() / "mlflow.db").is_file()
        for step in self.steps:
            if step.name in missing:
                self.results[step.name] = StepResult(step.name, step.stage, "planned",
                                                     note="STAGE NOT REGISTERED")
            elif step.stage == plan.DATA_STAGE:
                self.results[step.name] = self.data_step(step, dry=True)
            else:
                self.results[step.name] = self.train_step(step, dry=True)
        return list(self.results.values())

    def run(self) -> list[StepResult]:
        """Run the plan (see the module docstring); return the step results."""
        plan.check_registered(self.steps, self.name)
        resumed = self.open_parent()
        print(f"reproduce {self.name}: MLflow run {self.parent_id}"
              f"{' (resumed)' if resumed else ''}", flush=True)
        current = None
        try:
            for step in self.steps:
                current = step
                result = (self.data_step(step, dry=False) if step.stage == plan.DATA_STAGE
                          else self.train_step(step, dry=False))
                self._record(result)
                log.info("step %s: %s%s", step.name, result.status,
                         f" (run {result.run_id})" if result.run_id else "")
            self.link_report()
        except KeyboardInterrupt:
            self._end_parent("KILLED", f"interrupted in step {current.name if current else '?'}")
            raise
        except BaseException as exc:
            where = f"step '{current.name}' (stage={current.stage})" if current else "start"
            failed = self.results.get(current.name) if current else None
            run_note = (f"; its MLflow run {failed.run_id} holds the traceback"
                        if failed and failed.run_id else "")
            message = f"{where} failed: {type(exc).__name__}: {exc}{run_note}"
            self._end_parent("FAILED", message)
            if isinstance(exc, ReproduceError):
                raise
            log.error("%s\n%s", message, traceback.format_exc())
            raise ReproduceError(f"{message}. Rerun the same command to continue from this step "
                                 "(finished steps are reused)") from exc
        self._end_parent("FINISHED")
        return list(self.results.values())

    # ---------------------------------------------------------------- report

    def report_step(self) -> StepResult | None:
        """The last step whose stage is ``report`` and that has a run."""
        for result in reversed(list(self.results.values())):
            if result.stage == "report" and result.run_id:
                return result
        return None

    def link_report(self) -> str | None:
        """Copy the report's table onto the parent run (artifact, description); return it."""
        report = self.report_step()
        if report is None or self.parent_id is None:
            return None
        text = parent_run.link_report(self.client, self.parent_id, report.run_id,
                                      lambda table: self.description(report.run_id, table))
        if text is not None:
            self.report_text = text
        return text

    def description(self, report_run_id: str, text: str, limit: int = summary.NOTE_LIMIT) -> str:
        """The parent run's description (:func:`stellarexp.reproduce.summary.parent_description`)."""
        return summary.parent_description(report_run_id, text, self.steps_markdown(), limit)

    def steps_markdown(self) -> str:
        """The step table (status, run, seconds) as Markdown."""
        return summary.steps_markdown(self.results.values())

    def plan_text(self) -> str:
        """The plan as printed by a dry run: each step's stage, overrides and status."""
        return summary.plan_text(self.name, self.trainer, bool(self.cfg.get("tune")), self.steps,
                                 self.results)
