"""Checks of the container image, driven by ``.ci/image-check`` (not collected by pytest)."""
