"""The Ray scoring engine's actors: how many, and how many threads each, for a cluster's resources."""

from __future__ import annotations

import pytest

from pipeline.scoring.ray_engine import actor_layout


@pytest.mark.parametrize(
    ("resources", "layout"),
    [
        ({"CPU": 2.0}, (0, 1, 2)),  # one 2-core machine: one actor using both cores, not one of them
        ({"CPU": 3.0}, (0, 2, 1)),  # the tests' two nodes (2 + 1 CPUs): an actor per spare CPU
        ({"CPU": 16.0}, (0, 15, 1)),
        ({"CPU": 1.0}, (0, 1, 1)),
        ({}, (0, 1, 1)),
        ({"CPU": 8.0, "GPU": 2.0}, (2, 2, 4)),  # an actor per GPU, the CPUs shared between them
    ],
)
def test_actors_and_threads_for_the_cluster(resources: dict[str, float], layout: tuple[int, int, int]) -> None:
    assert actor_layout(resources) == layout
