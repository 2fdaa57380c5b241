"""Checks of the container image, run by ``.ci/image-check`` (not by pytest)."""
