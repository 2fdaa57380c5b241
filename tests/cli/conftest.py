"""Fixtures of the command tests."""

from tests.support.workbench import small_copy

__all__ = ["small_copy"]
