"""Train / validation / test splits by patient: no patient's slices in two splits."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np


def _class_targets(size: int, classes: list[int]) -> dict[int, int]:
    base, extra = divmod(size, len(classes))
    return {k: base + (1 if i < extra else 0) for i, k in enumerate(classes)}


def split_by_patient(
    patients: Sequence[str],
    labels: Sequence[int],
    sizes: Mapping[str, int | None],
    seed: int = 0,
    balanced: bool = True,
) -> dict[str, np.ndarray]:
    """Choose the sample rows of each split, whole patients at a time.

    ``sizes`` gives each split's number of samples in order (train, val, test); ``None`` (last
    split only) takes every patient the others do not need. With ``balanced``, each split takes
    equal numbers of each class (the "rest" split too, down to its rarest class).

    Patients are shuffled with ``seed``. First every split receives one patient with each class,
    where there are enough; then each further patient goes to the split whose target for that
    patient's main class is least filled, until all targets are met; the rest go to the ``None``
    split or are left out. Finally each split keeps a random subset of its patients' samples of
    the target size. On a small data set every split is smaller than asked, in proportion.
    """
    names = list(sizes)
    if any(size is None for size in list(sizes.values())[:-1]):
        raise ValueError("only the last split may take the rest (size None)")
    labels_array = np.asarray(labels, dtype=np.int64)
    keys = labels_array if balanced else np.zeros_like(labels_array)
    classes = sorted(int(k) for k in np.unique(keys))
    rng = np.random.default_rng(seed)
    rows_by_patient: dict[str, list[int]] = defaultdict(list)
    for row, patient in enumerate(patients):
        rows_by_patient[patient].append(row)
    order = [str(p) for p in rng.permutation(sorted(rows_by_patient))]
    class_counts = {p: Counter(int(keys[r]) for r in rows_by_patient[p]) for p in order}

    targets = {
        s: (None if size is None else _class_targets(int(size), classes))
        for s, size in sizes.items()
    }
    filled: dict[str, Counter] = {s: Counter() for s in names}
    members: dict[str, list[str]] = {s: [] for s in names}

    def assign(patient: str, split: str) -> None:
        members[split].append(patient)
        filled[split].update(class_counts[patient])
        order.remove(patient)

    for k in classes:  # every split gets each class where possible
        for split in names:
            if filled[split][k] == 0 and (targets[split] is None or targets[split][k] > 0):
                donor = next((p for p in order if class_counts[p][k] > 0), None)
                if donor is not None:
                    assign(donor, split)

    rest = names[-1] if targets[names[-1]] is None else None
    for patient in list(order):
        main = class_counts[patient].most_common(1)[0][0]
        fill = {
            s: filled[s][main] / targets[s][main]
            for s in names
            if targets[s] is not None and targets[s][main] > 0
        }
        open_splits = [s for s in fill if fill[s] < 1.0]
        if open_splits:
            assign(patient, min(open_splits, key=lambda s: (fill[s], names.index(s))))
        elif rest is not None:
            assign(patient, rest)

    chosen: dict[str, np.ndarray] = {}
    for split in names:
        rows = np.array(
            sorted(r for p in members[split] for r in rows_by_patient[p]), dtype=np.int64
        )
        by_class = {k: rows[keys[rows] == k] for k in classes}
        available = {k: len(v) for k, v in by_class.items()}
        want = available if targets[split] is None else targets[split]
        if balanced and all(available.values()):  # equal numbers, as many as the rarest allows
            smallest = min(min(available.values()), *want.values())
            want = {k: smallest for k in classes}
        picked = [rng.permutation(by_class[k])[: want[k]] for k in classes]
        chosen[split] = np.sort(np.concatenate(picked)) if picked else rows
    return chosen
