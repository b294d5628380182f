"""Peak memory of one refinement (score, aggregate with g, backward) in a fresh process.

    python -m benchmarks.memory_probe N_MASKS [--size 64] [--batch 1] [--chunk 64]

Prints one JSON line: the resident set just before the refinement and the highest one seen while
it ran (a thread reads /proc/self/statm every 0.2 ms), in KiB. Run in a fresh process with glibc's
mmap threshold fixed, so that freed buffers leave the resident set; the benchmarks call it once
per N.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import torch

from benchmarks.common import prompted_batch
from vapl.core.backbones import build_backbone
from vapl.core.refine import MonotoneWeight, PromptRefiner

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def resident_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_KIB


class PeakWatcher(threading.Thread):
    """Polls the resident set until stopped; ``peak`` is the highest value seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = resident_kib()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, resident_kib())
            time.sleep(0.0002)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, resident_kib())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n_masks", type=int)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_backbone("tiny", num_classes=2, in_channels=1).eval()
    images, prompts, labels, seeds = prompted_batch(args.batch, args.size)
    refiner = PromptRefiner(args.n_masks, 0.1, chunk_size=args.chunk, weight_fn=MonotoneWeight())
    # Warm up on a few masks so that one-time allocations (kernels, thread pools) come before.
    PromptRefiner(args.chunk, 0.1, chunk_size=args.chunk)(model, images, prompts, seeds)
    before = resident_kib()
    watcher = PeakWatcher()
    watcher.start()
    scores = refiner.target_scores(refiner.score(model, images, prompts, seeds), labels)
    refiner.refine_from_scores(scores, prompts, seeds).sum().backward()
    peak = watcher.stop()
    print(json.dumps({"n_masks": args.n_masks, "before_kib": before, "peak_kib": peak}))


if __name__ == "__main__":
    main()
