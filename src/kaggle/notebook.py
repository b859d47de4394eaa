"""The bundle's ``inference.ipynb`` (nbformat) and the API's ``kernel-metadata.json`` and ``dataset-metadata.json``.

The notebook's first code cell holds the settings a user may edit (where the competition and the bundle are
mounted, an install target, the output file, the device); the defaults are Kaggle's ``/kaggle/input/<name>``
layout and the working folder. It installs the bundle's wheels with ``pip install --no-index --no-deps`` (the
bundle holds every package the image lacks; ``--no-deps`` keeps pip from asking for the image's own torch),
then calls `src.kaggle.offline.predict_bundle`.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from src.utils import files

NOTEBOOK = "inference.ipynb"
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"

SETTINGS = '''# Settings: edit these when the inputs are mounted elsewhere.
COMPETITION_DIR = "/kaggle/input/{competition}"  # the competition's files (its test set)
BUNDLE_DIR = "/kaggle/input/{slug}"  # this bundle (the Kaggle Dataset made from it)
TARGET = None  # None: install into the image's site-packages; a folder: install there and import from there first
OUTPUT = "submission.csv"  # what the competition reads, in the working folder
DEVICE = "auto"  # 'auto' (a GPU when there is one), 'cpu' or 'cuda'
'''

INSTALL = '''import glob, importlib, subprocess, sys
wheels = sorted(glob.glob(f"{BUNDLE_DIR}/wheels/*.whl"))
command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", *wheels]
if TARGET:
    command += ["--target", TARGET]
subprocess.run(command, check=True)
if TARGET:
    sys.path.insert(0, TARGET)
importlib.invalidate_caches()
import src
print(f"{len(wheels)} wheels installed; the trainer imported from {src.__file__}")
'''

PREDICT = '''from src.kaggle.offline import predict_bundle
predict_bundle(BUNDLE_DIR, COMPETITION_DIR, OUTPUT, device=DEVICE)
'''


def build(manifest: dict) -> nbformat.NotebookNode:
    """The inference notebook for a bundle's manifest (`src.kaggle.bundle`), without outputs."""
    slug = manifest["dataset"].split("/")[-1]
    models = ", ".join(manifest["models"])
    intro = (
        f"# Offline inference for {manifest['competition']}\n\n"
        f"Written by `python -m src.kaggle bundle` on {manifest['created']} (code {manifest['code']}) from "
        f"`{manifest['source']}`: models {models}; TTA {manifest['tta']}. Runs with the internet off: it installs "
        "the bundle's wheels and writes the submission."
    )
    return nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(intro),
            nbformat.v4.new_code_cell(SETTINGS.format(competition=manifest["competition"], slug=slug)),
            nbformat.v4.new_code_cell(INSTALL),
            nbformat.v4.new_code_cell(PREDICT),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


def write(out: Path, manifest: dict) -> None:
    """Writes the notebook and both metadata files into the bundle folder ``out``."""
    dataset, competition = manifest["dataset"], manifest["competition"]
    files.write_text(out / NOTEBOOK, nbformat.writes(build(manifest)))
    kernel = {
        "id": f"{dataset}-inference",
        "title": f"{dataset.split('/')[-1]} inference",
        "code_file": NOTEBOOK,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": False,
        "dataset_sources": [dataset],
        "competition_sources": [competition],
        "kernel_sources": [],
    }
    files.write_text(out / KERNEL_METADATA, json.dumps(kernel, indent=1))
    dataset_metadata = {"title": dataset.split("/")[-1][:50], "id": dataset, "licenses": [{"name": "CC0-1.0"}]}
    files.write_text(out / DATASET_METADATA, json.dumps(dataset_metadata, indent=1))
