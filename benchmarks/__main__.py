"""Run the benchmark figures and print them: ``python -m benchmarks [--only 1,4]``.

Figures 1 to 7: the refinement engine (issue 9). Figures 8 to 12: the training runtime around it
(issue 16): ``python -m benchmarks --only 8,9,10,11,12``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import torch

from benchmarks.common import Figure, machine, say
from benchmarks.data import data_throughput
from benchmarks.epoch import epoch_against_floor
from benchmarks.refinement import against_reference, balanced_error, memory, overhead
from benchmarks.runtime import (
    checkpoint_costs,
    chunk_sizes,
    optimiser_step,
    validation_trade_off,
)
from benchmarks.training import g_phase, training_steps

FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12")


def run(only: set[str], device: torch.device, repeats: int) -> list[Figure]:
    figures: list[Figure] = []
    paper_forward_ms = None
    if "1" in only:
        say("\n[1] Overhead: refinement against the bare batched forward passes")
        for size, batch, n, chunk, key in ((64, 2, 32, 32, "1a"), (224, 2, 8, 16, "1b")):
            figures.append(overhead(device, "resnet18", size, batch, n, chunk, repeats, 1.10, key))
        paper_forward_ms = figures[-1].details["refine_ms_per_image"]
        figures.append(overhead(device, "tiny", 64, 4, 128, 64, repeats, None, "1c"))
    if "2" in only:
        say("\n[2] The G phase: cached scores against rescoring")
        figures.append(g_phase(device, "resnet18", 2, repeats, "2a"))
        figures.append(g_phase(device, "tiny", 8, repeats, "2b", goal=None))
        figures.append(g_phase(device, "tiny", 8, repeats, "2c", shared_masks=True, goal=None))
    if "3" in only:
        say("\n[3] Memory: N = 4096 against N = 256 at the same chunk size")
        figures.append(memory(device))
    if "4" in only:
        say("\n[4] Against the one-mask-per-pass loop of the reference demo")
        figures.append(against_reference(device, "resnet18", 64, 2, 16, 32, repeats, "4a"))
        figures.append(against_reference(device, "tiny", 32, 4, 128, 64, repeats, "4b"))
    if "5" in only:
        say("\n[5] A VAPL training step against a Baseline step")
        figures += training_steps(device, repeats=3, paper_forward_ms=paper_forward_ms)
    if "6" in only:
        say("\n[6] Data: loader samples/s against training samples/s")
        figures.append(data_throughput(device))
    if "7" in only:
        say("\n[7] Balanced against i.i.d. masks: error of the refined prompt against N = 4096")
        figures.append(balanced_error(device))
    if "8" in only:
        say("\n[8] A VAPL epoch through `vapl fit` against its floor (passes + a Baseline epoch)")
        figures += epoch_against_floor(device)
    if "9" in only:
        say("\n[9] Checkpoints: a full last.ckpt, weights only, the best epoch as a hard link")
        figures.append(checkpoint_costs(device))
    if "10" in only:
        say("\n[10] The scoring chunk: automatic against fixed sizes")
        figures += chunk_sizes(device, repeats)
    if "11" in only:
        say("\n[11] Adam: the per-parameter loop against the implementation chosen")
        figures.append(optimiser_step(device, repeats))
    if "12" in only:
        say("\n[12] Validation with fewer balanced masks against the training setting")
        figures += validation_trade_off(device)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(FIGURES), help="figures to run, e.g. 1,4")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per timing")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 by default: on a shared machine more threads spin-wait on each "
        "other and the timings scatter)",
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    unknown = only - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s) {sorted(unknown)}; choose from {', '.join(FIGURES)}")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")
    warnings.filterwarnings("ignore", ".*tensorboardX.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    say(f"machine: {machine()}")
    figures = run(only, device, args.repeats)
    elapsed = time.perf_counter() - start
    say(f"\nSummary ({elapsed / 60:.1f} min on {device.type}):")
    for figure in figures:
        say("  " + figure.line())
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"machine": machine(), "seconds": elapsed, "figures": [vars(f) for f in figures]},
                out,
                indent=1,
                default=str,
            )


if __name__ == "__main__":
    main()
