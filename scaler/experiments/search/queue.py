"""The search as one object (GridSearch): its study opened or resumed with its space, its stages queued as the
engine's planned runs and run here, in local workers or in `scaler worker` on any machine."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from scaler.errors import UserError
from scaler.experiments.search.config import SearchConfig, differences, grid_fingerprint, recorded_fingerprint
from scaler.experiments.search.decide import SearchDecisions
from scaler.experiments.search.plan import BASE, SCREEN, Job, trials_frame
from scaler.model.guard import check_fits
from scaler.model.scaling import compound
from scaler.study.engine import (
    HEARTBEAT,
    JOB,
    JobRunner,
    TrialBudget,
    drain,
    job_key,
    recording_interruptions,
)
from scaler.study.grid import CONTROL, Candidate, GridPoint, built_multipliers, control_network, space
from scaler.study.run import Cost, setup
from scaler.study.storage import (
    QueueStudy,
    check_url,
    describe_error,
    enqueue_missing,
    open_study,
    redact,
    removed_if_left_empty,
    sqlite_path,
    storage_errors,
    study_lock,
)
from scaler.study.workers import worker_process
from scaler.training.train import TrainingDiverged

QUEUE = "engine"  # study attribute "queue": its trainings are engine planned runs (older studies queued their own)


class GridSearch(SearchDecisions):
    """One study: the measured space, its plan, the screen, the race on fresh seeds, the outputs; its trainings are
    the engine's planned runs, queued stage by stage as the decisions below it move on."""

    def __init__(self, config: SearchConfig, log: Callable[[str], None] = print, enqueue: bool = True) -> None:
        config.check()
        self.config = config
        self.log = log
        self.setup = setup(config.run_config(), data=False)
        self.base = self.setup.spec
        self.costs: dict[str, Cost] = {}
        self.counted: dict[str, int] = {}
        stored = None
        if not enqueue:  # a worker joins a study whose space was measured by the command that made it
            self.study = self.open(create=False)
            stored = self.study.user_attrs.get("space")
        else:
            stored = self.stored_space()
        self.networks = (
            [GridPoint.from_json(data) for data in stored]
            if stored
            else space(self.base, config.phi, config.step, config.ratio_tolerance, self.count, extra=(CONTROL,))
        )
        self.feasible = {n.label: n for n in self.networks if n.feasible}
        self.control, self.control_snapped = control_network(self.networks)
        for network in self.feasible.values():
            check_fits(self.spec_of(network.label), config.train.batch_size, training=True)
        self.setup = self.setup.with_data()
        self.runner = JobRunner(self.setup, log)
        if enqueue:
            with removed_if_left_empty(config.storage_url):  # a refused plan leaves no study behind
                self.study = self.open(create=True)
                if "space" not in self.study.user_attrs:
                    self.study.set_user_attr("space", [network.to_json() for network in self.networks])
                self.study.set_user_attr("deadline", config.deadline or time.time() + config.budget)
                self.ensure_plan()
            queued = self.enqueue_missing() + self.advance()
            waiting, running = self.pending()
            snapped = f", snapped to {self.control.label}" if self.control_snapped else ""
            self.log(
                f"study {config.study_name}: {len(self.networks)} distinct networks on the grid, "
                f"{len(self.feasible)} within {config.ratio_tolerance:.0%} of {2**config.phi:g}x MACs; "
                f"control {CONTROL.label}{snapped}; {queued} newly queued, {waiting} waiting, {running} running elsewhere"
            )

    def stored_space(self) -> list[dict[str, Any]] | None:
        """The space a resumed study was made with (None for a new study), so that a rerun trains the same networks."""
        url = self.config.storage_url
        check_url(url)
        path = sqlite_path(url)
        if path is not None and not path.is_file():
            return None
        try:
            study = open_study(url, self.config.study_name, create=False)
        except UserError:
            return None
        stored = study.user_attrs.get("grid")
        if stored is not None and recorded_fingerprint(stored) != grid_fingerprint(self.config):
            return None  # open() refuses it in one line
        return study.user_attrs.get("space")

    def open(self, create: bool) -> QueueStudy:
        """The study, created (or resumed) with this fingerprint under the study's lock; a mismatch is an error."""
        config = self.config
        study = open_study(
            config.storage_url,
            config.study_name,
            create=create,
            heartbeat=config.heartbeat,
            sampler=optuna.samplers.RandomSampler(seed=config.seed),
            pruner=optuna.pruners.NopPruner(),
        )
        assert isinstance(study, QueueStudy)
        fingerprint = grid_fingerprint(config)
        try:
            existing = study.user_attrs.get("grid")
            if existing and recorded_fingerprint(existing) != fingerprint and create:
                changed = differences(recorded_fingerprint(existing), fingerprint)
                raise UserError(
                    f"study {config.study_name!r} was made with other settings ({'; '.join(changed)}); "
                    "choose another --study or rerun with the same options"
                )
            if existing and study.user_attrs.get("queue") != QUEUE:
                raise UserError(
                    f"study {config.study_name!r} was made by an older scaler search, which queued its trainings "
                    "its own way; start a new study (--study) or use the scaler version that made it"
                )
            if not existing:
                study.set_user_attr("grid", fingerprint)
                study.set_user_attr("queue", QUEUE)
                study.set_user_attr("config", config.stored())
        except storage_errors() as error:
            raise UserError(
                f"storage {redact(config.storage_url)} failed: {describe_error(error, config.storage_url)}"
            ) from None
        return study

    def point(self, job: Job) -> dict[str, Any]:
        """A job as the engine's planned run: the network's multipliers at its stage's phi, its seed, the stage's
        images, the test split read outside the screen, judged on validation; what trials.csv says of it besides."""
        phi = self.phi_of(job.stage)
        if job.network == BASE:
            candidate, ratio = Candidate(1.0, 1.0, 1.0), 1.0
        else:
            candidate = Candidate.from_label(job.network)
            member = job.stage == self.phi_stage
            at_phi = self.macs_at_phi(job.network) / self.macs_of(BASE) if member else None
            ratio = round(at_phi, 4) if at_phi is not None else float(self.feasible[job.network].macs_ratio or math.nan)
        multipliers = (
            (1.0, 1.0, 1.0) if job.network == BASE else compound(candidate.alpha, candidate.beta, candidate.gamma, phi)
        )
        return {
            "label": job.label,
            "variant": "base",
            **dict(zip(("depth", "width", "res_mult"), multipliers)),
            "train": True,
            "progressive": False,
            "seed": job.seed,
            "images": self.stage_images(job.stage),
            "test": job.stage != SCREEN,  # read only after selection: the pick, the base, the member exported
            "selection": True,
            "stage": job.stage,
            "network": job.network,
            "role": "member" if job.stage == self.phi_stage else self.role(job.network),
            **asdict(candidate),
            "macs_ratio": ratio,
        }

    def key(self, job: Job) -> str:
        """The engine's key of a job's planned run."""
        return job_key(self.point(job))

    def objective(self, trial: optuna.Trial) -> float:
        """The engine's evaluation of the planned run a trial holds, an interruption or crash recorded so that its
        job is queued again."""
        return recording_interruptions(self.runner.objective)(trial)

    def advance(self) -> int:
        """Once a stage has finished, decide the next (`decide`, under the study's lock) and queue it; how many jobs
        were queued."""
        if not self.over() and self.deadline is not None:
            with study_lock(self.config.storage_url, self.config.study_name):
                self.decide()
        return self.enqueue_missing()

    def enqueue_missing(self) -> int:
        """Queue, in a seeded order, every job of the decided stages no trial holds (interrupted ones again)."""
        keys = [self.key(job) for job in self.queued_jobs()]
        random.Random(self.config.seed).shuffle(keys)
        return enqueue_missing(self.study, self.config.storage_url, JOB, keys, as_param=False)

    def trials(self) -> pd.DataFrame:
        """trials.csv: `trials_frame` with each network's multipliers and input size as built, from the space."""
        frame = trials_frame(self.study)
        for column in ("depth", "width", "resolution"):
            values = {label: getattr(network, column) for label, network in self.feasible.items()} | {BASE: 1.0}
            frame[column] = frame.network.map(values)
        at = frame.stage == self.phi_stage
        for index in frame.index[at]:  # the class's members as built at --disambiguate-phi
            built = built_multipliers(self.spec_of(frame.network[index], self.config.disambiguate_phi), self.base)
            frame.loc[index, ["depth", "width", "resolution"]] = built
        frame["pixels"] = [
            self.spec_of(label, self.phi_of(stage)).resolution if isinstance(label, str) else None
            for label, stage in zip(frame.network, frame.stage)
        ]
        return frame

    def pending(self) -> tuple[int, int]:
        """(waiting, running) trials in the study."""
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        return states.count(TrialState.WAITING), states.count(TrialState.RUNNING)

    def run_queue(self, budget: TrialBudget | None = None) -> int:
        """Claim and run queued jobs until none is left or the budget is spent; how many this process ran.

        When the queue runs dry with nothing running, the next stage is queued (the confirmation after the
        screen). An interrupted or crashed trial goes back to the queue before the interruption goes on up.
        """
        return drain(
            self.study,
            self.objective,
            budget=budget,
            on_empty=self.advance,
            catch=(TrainingDiverged,),
            requeue=self.enqueue_missing,
            heartbeat=self.config.heartbeat or HEARTBEAT,
        )


def run_worker(config_json: dict[str, Any], budget: TrialBudget, threads: int) -> None:
    """Body of one local worker process: claim and run queued jobs until the queue or the budget is spent."""
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = SearchConfig.from_json(config_json, progress=False)
    worker_process(
        lambda: GridSearch(config, log=lambda line: print(line, flush=True), enqueue=False).run_queue(budget)
    )


def join_study(study: str, storage: str, data_dir: str | None = None, log: Callable[[str], None] = print) -> int:
    """`scaler worker`: join an existing study from any machine and run its queue; how many trials this worker ran."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    opened = open_study(storage, study, create=False)
    stored = opened.user_attrs.get("config")
    if not stored:
        raise UserError(f"study {study!r} was not made by scaler search")
    overrides: dict[str, Any] = {"storage": storage, "study": study}
    if data_dir:
        overrides["data_dir"] = data_dir
    config = SearchConfig.from_json(stored, **overrides)
    return GridSearch(config, log, enqueue=False).run_queue()
