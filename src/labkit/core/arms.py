"""A study's arms as rows: the name its tables use, the label its figures use, its colour, and whether it is a
reference row (a floor or a ceiling, read against and never claimed). Kept in ``core`` so that a study's data
module can list its arms without putting the study base into its grid tasks' cache key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    colour: str = "C0"
    reference: bool = False


def arm_labels(arms: Sequence[Arm]) -> dict[str, str]:
    return {arm.name: arm.label for arm in arms}


def arm_colours(arms: Sequence[Arm]) -> dict[str, str]:
    return {arm.name: arm.colour for arm in arms}
