"""Running a grid's cells: in subprocesses, in this process, or in a few worker processes.

* ``local``: each ``vapl fit-test`` in its own subprocess (the default of ``vapl benchmark``): every
  run starts from a fresh interpreter, at the price of importing torch and Lightning per run
  (several seconds on a small CPU).
* ``inprocess``: each run (``vapl fit-test``) calls :func:`vapl.training.fit_then_test.fit_then_test` in this process
  (``workers=1``) or in one of ``workers`` spawned processes that each import once. A run's output
  goes to its ``log.txt`` (file descriptors 1 and 2 redirected, so Lightning's log lines too), the
  environment is restored after it (W&B variables, ``PL_GLOBAL_SEED``), and every run seeds itself
  from its ``seed_everything`` as a fresh process would: a cell's numbers do not depend on what ran
  before it in the same process (tests/results/test_launch.py checks this).

A cell that another starts from (CRAYON) runs first, then its ``vapl crayon export`` and ``answer``
(subprocesses under every launch); a cell whose source failed is not run. Each
finished cell gets a ``timing.json`` (wall and CPU seconds, launch, threads), which the results
page sums.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path

import yaml

from vapl.results.grid import GridRun, command, is_finished, run_config
from vapl.results.stages import crayon_folder, export_commands, is_exported

LAUNCHES = ("local", "inprocess")
TIMING_FILE = "timing.json"


@dataclass
class Outcome:
    """What became of one cell: exit code (0: finished), seconds, and the stage that failed."""

    run: GridRun
    code: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    failed_stage: str = ""


def exporters(runs: Sequence[GridRun]) -> set[GridRun]:
    """Cells whose Grad-CAMs a CRAYON cell starts from."""
    return {r.start_from for r in runs if r.start_from is not None and r.crayon}


def is_done(run: GridRun, exported: set[GridRun]) -> bool:
    """Finished, and exported where a CRAYON cell needs it."""
    return is_finished(run) and (run not in exported or is_exported(run))


# ----- one run in this process --------------------------------------------------------------------
@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (print, tqdm, logging handlers, C code) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def call_inprocess(function: Callable[[], object], log: Path) -> int:
    """Call ``function`` with its output in ``log`` and the environment restored; exit code."""
    environment = dict(os.environ)
    code = 0
    with output_to(log):
        try:
            function()
        except SystemExit as error:
            code = error.code if isinstance(error.code, int) else 1
            if code:
                print(f"SystemExit: {error.code}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - a failed cell is reported, the grid goes on
            traceback.print_exc()
            code = 1
    os.environ.clear()
    os.environ.update(environment)
    gc.collect()
    return code


def call_subprocess(args: list[str], log: Path, threads: int) -> tuple[int, float]:
    """Run ``args`` with its output in ``log``; exit code and the child's CPU seconds."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with log.open("a") as handle:
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=environment)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime


def set_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def run_cell(
    run: GridRun,
    overrides: list[str],
    launch: str,
    threads: int,
    export: bool,
    wandb: bool = False,
) -> Outcome:
    """Fit and test one cell (unless finished), then export it for CRAYON where ``export``."""
    start, cpu_start = time.perf_counter(), time.process_time()
    run.folder.mkdir(parents=True, exist_ok=True)
    if not (run.folder / "run.yaml").is_file():
        (run.folder / "run.yaml").write_text(yaml.safe_dump(run_config(run, wandb)))
    child_cpu = 0.0
    log = run.folder / "log.txt"
    args = command(run, overrides)
    steps: list[str] = []
    if not is_finished(run):
        log.write_text("")
        steps.append("fit-test")
        if launch == "inprocess":

            def fit_test() -> None:
                from vapl.training.fit_then_test import fit_then_test

                fit_then_test(args[4:])

            set_threads(threads)
            code = call_inprocess(fit_test, log)
        else:
            code, child_cpu = call_subprocess(args, log, threads)
        if code:
            return Outcome(run, code, time.perf_counter() - start, 0.0, "fit-test")
    if export and not is_exported(run):  # CRAYON's stages: `vapl crayon` subprocesses
        steps.append("crayon export")
        crayon_folder(run).mkdir(parents=True, exist_ok=True)
        for argv in export_commands(run, overrides):
            code, cpu = call_subprocess(argv, log, threads)
            child_cpu += cpu
            if code:
                return Outcome(run, code, time.perf_counter() - start, 0.0, "crayon export")
    outcome = Outcome(
        run, 0, time.perf_counter() - start, time.process_time() - cpu_start + child_cpu
    )
    if steps:
        timing = {
            "wall_s": round(outcome.wall_s, 2),
            "cpu_s": round(outcome.cpu_s, 2),
            "launch": launch,
            "threads": threads,
            "stages": steps,
        }
        (run.folder / TIMING_FILE).write_text(json.dumps(timing, indent=1) + "\n")
    return outcome


# ----- the schedule -------------------------------------------------------------------------------
class _Inline(Executor):
    """Runs each submitted call at once, in this process."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001
            future.set_exception(error)
        return future


def _executor(launch: str, workers: int, threads: int) -> Executor:
    if workers <= 1 and launch == "inprocess":
        return _Inline()
    if launch == "inprocess":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=set_threads,
            initargs=(threads,),
        )
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max(workers, 1))


def execute(
    runs: Sequence[GridRun],
    overrides: list[str],
    launch: str = "inprocess",
    workers: int = 1,
    threads: int = 1,
    fail_fast: bool = False,
    wandb: bool = False,
) -> list[Outcome]:
    """Run every cell of ``runs`` that is not done, sources before the cells that start from
    them; returns the outcomes of the cells that ran (failed ones with a non-zero code)."""
    from vapl.core.progress import progress as progress_bar

    if launch not in LAUNCHES:
        raise ValueError(f"launch is one of {LAUNCHES}, got {launch!r}")
    exported = exporters(runs)
    waiting = [r for r in runs if not is_done(r, exported)]
    outcomes: list[Outcome] = []
    failed: set[GridRun] = set()
    progress = progress_bar(total=len(waiting), desc="benchmark", unit="run")
    running: dict[Future, GridRun] = {}
    with _executor(launch, workers, threads) as pool:
        while waiting or running:
            for run in list(waiting):
                if len(running) >= max(workers, 1):
                    break
                source = run.start_from
                if source is not None and source in failed:
                    waiting.remove(run)
                    failed.add(run)
                    outcomes.append(Outcome(run, -1, failed_stage=f"source {source.folder}"))
                    progress.update()
                    continue
                if source is not None and not is_done(source, exported):
                    continue
                waiting.remove(run)
                progress.set_postfix_str(f"{run.dataset} {run.method} seed {run.seed}")
                future = pool.submit(
                    run_cell, run, overrides, launch, threads, run in exported, wandb
                )
                running[future] = run
            if not running:
                if waiting:  # sources missing from the list: nothing can start
                    raise RuntimeError(
                        "cells wait for sources that are not in the grid: "
                        + ", ".join(str(r.folder) for r in waiting)
                    )
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001 - a worker died
                    outcome = Outcome(run, 1, failed_stage=f"worker: {error!r}")
                outcomes.append(outcome)
                progress.update()
                if outcome.code:
                    failed.add(run)
                    log = run.folder / "log.txt"
                    tail = log.read_text().splitlines()[-15:] if log.is_file() else []
                    progress.write(
                        f"FAILED ({outcome.code}, {outcome.failed_stage}): {run.folder} after "
                        f"{outcome.wall_s:.0f} s\n" + "\n".join(tail)
                    )
                    if fail_fast:
                        waiting.clear()
    progress.close()
    return outcomes
