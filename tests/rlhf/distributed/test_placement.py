"""Both placements implement the Placement protocol, with the same signatures."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("ray")

from rlhf.distributed import placement as placement_module
from rlhf.distributed.placement import InProcessPlacement, Placement, PolicyActor, RayPlacement
from rlhf.distributed.worker import PolicyWorker

METHODS = [name for name in vars(Placement) if not name.startswith("_")]


@pytest.mark.parametrize("cls", [InProcessPlacement, RayPlacement])
def test_each_placement_implements_the_protocol_with_its_signatures(cls: type) -> None:
    assert issubclass(cls, Placement)
    for name in METHODS:
        expected = list(inspect.signature(getattr(Placement, name)).parameters)
        assert list(inspect.signature(getattr(cls, name)).parameters) == expected, (cls.__name__, name)


def test_ray_actors_are_policy_workers_called_by_method_not_by_name() -> None:
    assert issubclass(PolicyActor, PolicyWorker)
    assert not hasattr(PolicyActor, "call")
    assert not hasattr(placement_module, "evaluation_generate")
