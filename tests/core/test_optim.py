"""Adam in its fastest implementation gives the per-parameter loop's update."""

from __future__ import annotations

import torch

from vapl.core import optim
from vapl.core.backbones import build_backbone


def _parameters(seed: int = 0) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    model = build_backbone("tiny", num_classes=3, in_channels=2)
    parameters = list(model.parameters())
    for p in parameters:
        p.grad = torch.randn_like(p)
    return parameters


def _clone(parameters: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    copies = [torch.nn.Parameter(p.detach().clone()) for p in parameters]
    for copy, p in zip(copies, parameters):
        copy.grad = p.grad.clone()
    return copies


def test_three_steps_match_the_per_parameter_loop_to_float_tolerance():
    reference = _parameters()
    fast = _clone(reference)
    loop = torch.optim.Adam(reference, lr=1e-2, weight_decay=1e-3, foreach=False)
    chosen = optim.adam(fast, lr=1e-2, weight_decay=1e-3)
    assert chosen.defaults["fused"] or chosen.defaults["foreach"]
    before = [p.detach().clone() for p in reference]
    for _ in range(3):
        loop.step()
        chosen.step()
    for a, b, start in zip(reference, fast, before):
        assert not torch.equal(a, start)  # the parameters moved
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_the_cpu_gets_the_fused_kernel_and_a_device_without_it_gets_foreach(monkeypatch):
    assert optim.adam(_parameters(), lr=1e-3).defaults["fused"]  # torch >= 2.4 on the CPU
    original = torch.optim.Adam

    def no_fused(*args, fused=None, **kwargs):  # type: ignore[no-untyped-def]
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be ... supported devices")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    fallback = optim.adam(_parameters(), lr=1e-3)
    assert fallback.defaults["foreach"] and not fallback.defaults["fused"]


def test_a_checkpoint_of_the_loop_implementation_resumes_with_the_same_updates():
    reference = _parameters()
    resumed = _clone(reference)
    loop = torch.optim.Adam(reference, lr=1e-2, foreach=False)
    loop.step()
    for a, b in zip(resumed, reference):
        a.data.copy_(b.data)
    chosen = optim.adam(resumed, lr=1e-2)
    chosen.load_state_dict(loop.state_dict())  # e.g. a checkpoint written before this change
    loop.step()
    chosen.step()
    for a, b in zip(reference, resumed):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
