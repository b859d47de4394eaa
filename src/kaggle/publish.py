"""``bundle --upload <user>/<slug> [--push]``: the bundle as a Kaggle Dataset (created, or a new version) and its
notebook pushed as a Kaggle notebook, through the official client (`src.kaggle.client`)."""

from __future__ import annotations

from pathlib import Path

from src.kaggle.client import calling


def _checked(response, what: str):
    error = getattr(response, "error", None)
    if error:
        raise ValueError(f"{what}: {error}")
    return response


def upload(api, bundle_dir: Path, dataset: str, message: str) -> str:
    """Creates the dataset ``dataset`` from ``bundle_dir``, or a new version if it exists; returns which.

    Raises:
        ValueError: the API refused (its message named).
    """
    try:
        api.dataset_status(dataset)
        exists = True
    except Exception:  # the client raises its HTTP error for a dataset that does not exist
        exists = False
    with calling(dataset):
        if exists:
            _checked(api.dataset_create_version(str(bundle_dir), message, quiet=True, dir_mode="zip"), dataset)
            return "new version"
        _checked(api.dataset_create_new(str(bundle_dir), public=False, quiet=True, dir_mode="zip"), dataset)
        return "created"


def push(api, bundle_dir: Path) -> str:
    """Pushes ``inference.ipynb`` with ``kernel-metadata.json``; returns the notebook's URL (or its id)."""
    with calling(str(bundle_dir)):
        response = _checked(api.kernels_push(str(bundle_dir)), "kernels push")
    return getattr(response, "url", "") or "pushed"
