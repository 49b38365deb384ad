"""tracker.fix.builder: the hot-path constructor must make exactly what the dataclass makes."""

from __future__ import annotations

import dataclasses

import pytest

from tracker.fix import Fix, builder, new_fix
from tracker.store.fixes import StoredFix

VALUES = (1.7e9, 48.1, -11.5, 520.5, 5.25, 271.5, 1, 9, 0.9, 1.1, 1.4, 2.5, 2.6, None)


def test_a_built_fix_equals_the_constructed_one_and_stays_frozen() -> None:
    fix = builder(Fix)(*VALUES)
    assert type(fix) is Fix
    assert fix == Fix(*VALUES)
    assert dataclasses.astuple(fix) == VALUES
    with pytest.raises(dataclasses.FrozenInstanceError):
        fix.lat = 0.0  # type: ignore[misc]
    assert hash(fix) == hash(Fix(*VALUES))
    assert new_fix(*VALUES) == fix and type(new_fix(*VALUES)) is Fix  # the shared one


def test_a_built_stored_fix_takes_the_storage_fields_after_the_fix_fields() -> None:
    stored = builder(StoredFix)(*VALUES, 7, 3, "cafe", True)
    assert stored == StoredFix(*VALUES, id=7, activity_id=3, poi="cafe", local=True)
    assert stored.fix == Fix(*VALUES) and type(stored.fix) is Fix


def test_every_field_must_be_given() -> None:
    with pytest.raises(TypeError):
        builder(Fix)(*VALUES[:3])
