"""The dataloading every datamodule shares: worker processes capped at the CPUs available."""

from __future__ import annotations

from datamodules import base
from datamodules.synthetic import SyntheticDataModule


def test_num_workers_never_exceeds_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(base.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert base.available_cpus() == 2
    data = SyntheticDataModule(n_train=4, n_val=4, n_test=4, image_size=8, num_workers=4)
    assert data.num_workers == 2
    assert data.hparams.num_workers == 4  # the config's value is kept as it was given
    data.setup("fit")
    assert data.train_dataloader().num_workers == 2
    assert SyntheticDataModule(n_train=4, image_size=8, num_workers=1).num_workers == 1
    assert SyntheticDataModule(n_train=4, image_size=8).num_workers == 0
