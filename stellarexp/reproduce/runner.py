"""Run a plan under one MLflow parent run, reusing every step that already finished.

Each train step is composed, hashed (:func:`stellarexp.tracking.runs.job_config_hash`: the
config without volatile keys plus the data fingerprint) and looked up: a FINISHED run with the
same ``config_hash`` tag is reused, otherwise the job runs in this process as a child of the
parent run. Inputs of later steps are pinned to the runs of earlier ones (``refs``), so their
hashes change when an earlier step is re-run. A reproduce that stopped (error, Ctrl-C, kill) and
is started again reopens its parent run and continues with the first step that has no finished
run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from stellarexp.reproduce import jobs, plan
from stellarexp.reproduce.plan import ReproduceError, Step
from stellarexp.tracking.redact import redact, redact_text

log = logging.getLogger("stellarexp.reproduce")

PARENT_STAGE = "reproduce"
NOTE_LIMIT = 8000  # MLflow's longest tag value: the parent run's description must fit
PLAN_TAG = "reproduce_plan"


def _last_active_run():
    """The process's last MLflow run if it belongs to the current store, else ``None``.

    ``mlflow.last_active_run`` remembers the id across tracking URIs and raises when that run is
    in another store (an earlier job of this process logged elsewhere).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.last_active_run()
    except MlflowException:
        return None


@dataclass
class StepResult:
    """What happened to one step: ``ran``, ``reused``, ``failed``, ``planned`` (dry run)."""

    step: str
    stage: str
    status: str
    run_id: str | None = None
    config_hash: str | None = None
    seconds: float = 0.0
    note: str = ""


def plan_hash(cfg) -> str:
    """Hash of what the experiment computes (not of dry_run/rerun/tracking/progress)."""
    import hashlib

    from omegaconf import OmegaConf

    keep = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k])
            else cfg[k] for k in ("experiment", "tune", "tune_trials") if k in cfg}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _quiet_downloads():
    """No MLflow download progress bar in the middle of the printed summary."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class Reproduce:
    """One reproduce of ``cfg`` (the composed ``stellarexp/conf/reproduce.yaml``).

    Parameters
    ----------
    cfg : omegaconf.DictConfig
    output_dir : path-like
        The reproduce job's folder; step outputs go to ``<outputs>/reproduce/<experiment>/steps``.
    """

    def __init__(self, cfg, output_dir):
        from stellarexp.home import outputs_dir

        self.cfg = cfg
        self.name = str(cfg.experiment.name)
        self.output_dir = Path(output_dir)
        self.steps_dir = outputs_dir() / "reproduce" / self.name / "steps"
        self.trainer = plan.resolve_trainer(cfg.get("accelerator", "auto"))
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
        tcfg = self.cfg.get("tracking") or {}
        out = []
        if tcfg.get("uri"):
            out.append(f"tracking.uri={_quote(tcfg.uri)}")
        if tcfg.get("experiment"):
            out.append(f"tracking.experiment={_quote(tcfg.experiment)}")
        return out

    @property
    def client(self):
        if self._client is None:
            import mlflow

            from stellarexp.tracking import store

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
        from stellarexp.tracking import stale

        client = self.client
        digest = plan_hash(self.cfg)
        query = f"tags.stage = '{PARENT_STAGE}' and tags.{PLAN_TAG} = '{digest}'"
        old = client.search_runs([self.experiment_id], query, max_results=1,
                                 order_by=["attributes.start_time DESC"])
        tags = {"stage": PARENT_STAGE, PLAN_TAG: digest, "reproduce.experiment": self.name,
                "trainer": self.trainer, "tune": str(bool(self.cfg.get("tune"))),
                **stale.process_tags()}
        if old and old[0].info.status != "FINISHED":
            run = old[0]
            pid = run.data.tags.get(stale.PID_TAG)
            if (run.info.status == "RUNNING" and pid and run.data.tags.get(stale.HOST_TAG)
                    == tags[stale.HOST_TAG] and stale.process_alive(pid, run.data.tags.get(
                        stale.START_TAG))):
                raise ReproduceError(f"this experiment is already running in process {pid} "
                                     f"(MLflow run {run.info.run_id}); wait for it or stop it")
            self.parent_id = run.info.run_id
            client.update_run(self.parent_id, status="RUNNING")
            for key, value in tags.items():
                client.set_tag(self.parent_id, key, value)
            log.info("resuming reproduce run %s (was %s)", self.parent_id, run.info.status)
            return True
        run = client.create_run(self.experiment_id, run_name=f"reproduce-{self.name}", tags=tags)
        self.parent_id = run.info.run_id
        import yaml
        from omegaconf import OmegaConf

        client.log_text(self.parent_id, yaml.safe_dump(
            redact(OmegaConf.to_container(self.cfg, resolve=True)), sort_keys=False),
            "config/reproduce.yaml")
        return False

    def _record(self, result: StepResult) -> None:
        self.results[result.step] = result
        if self.parent_id is None:
            return
        client = self.client
        if result.run_id:
            client.set_tag(self.parent_id, f"step.{result.step}", result.run_id)
        client.log_text(self.parent_id, redact_text(self.steps_markdown()), "reproduce/steps.md")
        client.log_text(self.parent_id, json.dumps(redact([asdict(r) for r in self.results.values()]),
                                                   indent=2), "reproduce/steps.json")

    def _end_parent(self, status: str, error: str | None = None) -> None:
        if self.parent_id is None:
            return
        client = self.client
        total = sum(r.seconds for r in self.results.values())
        ran = sum(r.status == "ran" for r in self.results.values())
        reused = sum(r.status == "reused" for r in self.results.values())
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(self.parent_id, metrics=[
            Metric("reproduce/step_seconds", total, now, 0),
            Metric("reproduce/steps_ran", ran, now, 0),
            Metric("reproduce/steps_reused", reused, now, 0)])
        if error:
            client.set_tag(self.parent_id, "error", redact_text(error)[:1000])
        client.set_terminated(self.parent_id, status)

    # ---------------------------------------------------------------- steps

    def _job_overrides(self, step: Step, dry: bool) -> tuple[list[str], list[str]]:
        """(overrides of the step's job, names of earlier steps it waits for without a run)."""
        extra, waiting = [], []
        for key, target in step.refs.items():
            run_id = self.results[target].run_id if target in self.results else None
            if run_id is None:
                if not dry:
                    raise ReproduceError(f"step '{step.name}' needs the run of step '{target}', "
                                         "which has none")
                waiting.append(target)
                run_id = f"<run of {target}>"
            extra.append(f"++{key}={_quote(run_id)}")
        if step.collect:
            ids = [r.run_id or f"<run of {r.step}>" for r in self.results.values()
                   if r.stage != plan.DATA_STAGE]
            waiting += [r.step for r in self.results.values()
                        if r.stage != plan.DATA_STAGE and not r.run_id]
            extra.append("stage.run_ids=[" + ",".join(_quote(i) for i in ids) + "]")
        tags = [f"++tracking.tags.reproduce_step={_quote(step.name)}",
                f"++tracking.tags.reproduce_experiment={_quote(self.name)}"]
        if self.parent_id:
            tags.append(f"tracking.parent_run_id={self.parent_id}")
        return [*step.overrides, *self.tracking_overrides, *extra, *tags], waiting

    def data_step(self, step: Step, dry: bool) -> StepResult:
        """Simulate (synthetic) and build the dataset file when absent or stale."""
        from stellarexp.data import pipeline
        from stellarexp.data.fingerprint import data_fingerprint

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
                path = pipeline.build(data_cfg, progress=bool(self.cfg.get("progress", True)))
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

        overrides, waiting = self._job_overrides(step, dry)
        job_cfg = jobs.compose_job(overrides)
        if self.cfg.get("tune") and step.stage == "baseline":
            if dry:
                from stellarexp.reproduce.tune import study_plan

                studies = ", ".join(f"{e['name']} ({e['n_trials']} trials)" for e in study_plan(
                    job_cfg, step.overrides, self.cfg.get("tune_trials")))
                return StepResult(step.name, step.stage, "planned", note=f"tune {studies}")
            from stellarexp.reproduce.tune import tuned_overrides

            overrides = overrides + tuned_overrides(job_cfg, step.overrides,
                                                    self.cfg.get("tune_trials"), self.client,
                                                    self.parent_id)
            job_cfg = jobs.compose_job(overrides)
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
        from stellarexp.home import mlruns_dir
        from stellarexp.tracking import store

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
        client = self.client
        client.set_tag(self.parent_id, "report_run_id", report.run_id)
        try:
            with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
                path = client.download_artifacts(report.run_id, "comparison/comparison.md", tmp)
                text = Path(path).read_text()
        except Exception as exc:  # noqa: BLE001 - the report run itself is still linked
            log.warning("could not read the report of run %s: %s", report.run_id, exc)
            return None
        client.log_text(self.parent_id, redact_text(text), "report/comparison.md")
        client.set_tag(self.parent_id, "mlflow.note.content",
                       redact_text(self.description(report.run_id, text)))
        self.report_text = text
        return text

    def description(self, report_run_id: str, text: str, limit: int = NOTE_LIMIT) -> str:
        """The parent run's description: the report, then the steps, within MLflow's tag limit.

        A report too long for it loses its figure links first (they stay in the artifact
        ``report/comparison.md``), then its end.
        """
        head = f"Report: MLflow run {report_run_id} (artifacts comparison/).\n\n"
        steps = f"\n\nSteps:\n\n{self.steps_markdown()}"
        if len(head) + len(text) + len(steps) > limit and "\nFigures\n" in text:
            text = (text[:text.index("\nFigures\n")]
                    + "\nFigures: links in the artifact report/comparison.md\n")
        room = limit - len(head) - len(steps)
        if len(text) > room:
            cut = "\n... (cut; the whole report is the artifact report/comparison.md)"
            text = text[:max(room - len(cut), 0)] + cut
        return (head + text + steps)[:limit]

    def steps_markdown(self) -> str:
        """The step table (status, run, seconds) as Markdown."""
        lines = ["| step | stage | status | run | seconds | note |", "|---|---|---|---|---|---|"]
        for r in self.results.values():
            lines.append(f"| {r.step} | {r.stage} | {r.status} | {r.run_id or ''} | "
                         f"{r.seconds:g} | {r.note} |")
        return "\n".join(lines)

    def plan_text(self) -> str:
        """The plan as printed by a dry run: each step's stage, overrides and status."""
        tune = ", tune=true" if self.cfg.get("tune") else ""
        lines = [f"experiment {self.name} (trainer={self.trainer}{tune}): {len(self.steps)} steps"]
        for i, step in enumerate(self.steps, 1):
            r = self.results.get(step.name)
            status = (r.note or r.status) if r else ""
            lines.append(f"{i:2d}. {step.name:<24s} stage={step.stage:<16s} {status}")
            own = [o for o in step.overrides if not o.startswith(("trainer=", "stage="))]
            lines.append(f"      overrides: {' '.join(own)}")
            for key, target in step.refs.items():
                lines.append(f"      {key} <- run of step '{target}'")
            if step.collect:
                lines.append("      stage.run_ids <- the runs of every earlier step")
        return "\n".join(lines)
