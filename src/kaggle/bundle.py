"""``python -m src.kaggle bundle <run or ensemble folder> --out bundle/``: a Kaggle Dataset that predicts offline.

The folder holds ``wheels/`` (the project as a wheel, and a wheel of every package the inference needs that the
competition image lacks, with their own requirements, at the versions installed here), ``models/`` (every
fold's best checkpoint, or every ensemble member's, optionally as fp16, with the configs and class lists),
``bundle.json`` (models, ensemble weights, TTA, where the test files lie inside the competition folder),
``inference.ipynb`` (installs from ``wheels/`` with ``pip install --no-index`` and runs
`src.kaggle.offline.predict_bundle`), and ``dataset-metadata.json`` / ``kernel-metadata.json`` for the API
(internet off; the competition and the dataset as sources). What the image has is a ``pip freeze`` listing:
`DEFAULT_IMAGE` (Kaggle's CPU image, dated in its header) or ``--image-has``.

The wheels come from ``pip wheel`` (pip's own resolver and builder, sdists included); the walk over the
requirements is our own, because pip has no "everything this needs that that environment lacks" mode.

Check, then write: the folder, its members' checkpoints (each must open), the test files and the packages are
checked first; the bundle is built in a temporary folder that replaces the earlier bundle only when it is
complete (`src.inference.outputs.replacing_folder`): a refused or failed command (pip failing, say) leaves it as it was.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from datetime import datetime
from pathlib import Path

import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from src.config import Config
from src.inference.outputs import check_folder, read_weights, replacing_folder
from src.inference.tta import tta_variants
from src.kaggle import notebook
from src.kaggle.offline import BUNDLE_JSON, MODELS
from src.kaggle.submit import ENSEMBLE, folder_config
from src.tracking import notes, rundir, share
from src.utils import files

DEFAULT_IMAGE = Path(__file__).with_name("kaggle_image.txt")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
WHEELS = "wheels"


def image_packages(path: Path) -> set[str]:
    """The distribution names (canonical) of a ``pip freeze`` listing; comments and blank lines skipped.

    Raises:
        FileNotFoundError: no such file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--image-has {path}: no such file (the output of `pip freeze` in a Kaggle notebook)")
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match and not line.lstrip().startswith(("#", "-")):
            names.add(canonicalize_name(match.group(1)))
    return names


def project_requirements() -> list[str]:
    """What the inference imports: ``[project] dependencies`` of the project's ``pyproject.toml``."""
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def missing_packages(requirements: list[str], image: set[str]) -> dict[str, str]:
    """The distributions ``requirements`` need, transitively, that ``image`` lacks: name -> version installed here.

    Raises:
        ValueError: a needed distribution that is not installed here (so no version to bundle).
    """
    needed: dict[str, str] = {}
    queue = list(requirements)
    while queue:
        requirement = Requirement(queue.pop(0))
        name = canonicalize_name(requirement.name)
        if name in image or name in needed or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        try:
            needed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise ValueError(f"{requirement.name}: needed by the inference but not installed here; "
                             "pip install -r requirements.txt") from None
        queue += metadata.requires(name) or []
    return needed


def build_wheels(packages: dict[str, str], out: Path, wheels_from: Path | None) -> list[str]:
    """The project's wheel and one per package, built or fetched by ``pip wheel`` into ``out``; their file names.

    Raises:
        ValueError: pip failed (its last line named: no registry and no ``--wheels-from``, a missing wheel).
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # build from a copy: no build/ or egg-info in the checkout
        source = Path(tmp) / "project"
        shutil.copytree(PROJECT_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(PROJECT_ROOT / "pyproject.toml", source)
        _pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)], "the project's wheel")
    if packages:
        where = ["--no-index", "--find-links", str(wheels_from)] if wheels_from else []
        pins = [f"{name}=={version}" for name, version in sorted(packages.items())]
        _pip(["wheel", "--no-deps", *where, "-w", str(out), *pins], ", ".join(pins))
    return sorted(p.name for p in out.glob("*.whl"))


def _pip(args: list[str], what: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    if done.returncode:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise ValueError(f"pip wheel failed for {what}: {lines[-1] if lines else done.returncode}")


def members(folder: Path, options=None) -> tuple[list[Path], list[float], str]:
    """The runs a folder predicts with: itself, or an ensemble's members (a shared ``mlflow:<run-id>`` member
    downloaded, `share.resolve_run`, from ``options.mlflow`` or MLFLOW_TRACKING_URI); with the weights and blend
    method.

    Raises:
        ValueError: a stacked ensemble (`src.inference.stacking`).
    """
    if (folder / ENSEMBLE).is_file():
        blend = json.loads((folder / ENSEMBLE).read_text())
        if blend.get("method") == "stack":
            raise ValueError(f"{folder}: a stacked ensemble cannot be bundled yet (its level-2 model is not saved); "
                             "bundle a weighted blend (src.ensemble --method mean, geometric or rank)")
        runs = [share.resolve_run(r, getattr(options, "mlflow", None)) for r in blend["runs"]]  # mlflow:<run-id> too
        return runs, blend["weights"], blend.get("method", "mean")
    return [folder], [1.0], "mean"


def copy_model(run: Path, out: Path, half: bool) -> None:
    """The files `src.predict` reads from ``run``: configs, class lists, OOF, and each fold's best checkpoint
    (fp16 with ``half``: floating-point tensors halved, loaded back into the float32 model by load_state_dict)."""
    for name in (rundir.CONFIG, rundir.OOF):
        if (run / name).is_file():
            shutil.copyfile(run / name, _made(out / name))
    for fold in rundir.read_fold_runs(run):
        target = out / fold.run_dir.relative_to(run) if fold.run_dir != run else out
        for name in (rundir.CONFIG, rundir.CLASSES):
            shutil.copyfile(fold.run_dir / name, _made(target / name))
        if half:
            state = read_weights(fold.checkpoint)
            torch.save({k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()},
                       _made(target / fold.checkpoint.name))
        else:
            shutil.copyfile(fold.checkpoint, _made(target / fold.checkpoint.name))


def _made(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_files(config: Config) -> dict[str, str | None]:
    """Where the test set lies inside the competition folder (paths relative to the run's ``--data-root``).

    Raises:
        ValueError: the run's config names no data root or test table (it was not trained from ``train.yaml``).
    """
    competition = config.competition
    if not competition.data_root or not competition.test_csv:
        raise ValueError("the run's config names no --data-root and --test-csv; train it with --config "
                         "<folder>/train.yaml from `python -m src.kaggle inspect <folder>`")
    root = competition.data_root

    def relative(path: str | None) -> str | None:
        return None if path is None else os.path.relpath(path, root).replace(os.sep, "/")

    return {
        "test_csv": relative(competition.test_csv),
        "test_image_dir": relative(competition.test_image_dir),
        "test_parquet": relative(competition.test_parquet),
        "sample_submission": relative(competition.sample_submission),
    }


def bundle(folder: Path, out: Path, options) -> dict:
    """Writes the bundle of ``folder`` into ``out`` (see the module doc); returns its manifest.

    ``options``: the ``bundle`` command's flags (`src.kaggle.cli.Bundle`).

    Raises:
        ValueError: see `test_files`, `missing_packages`, `build_wheels`; a checkpoint that cannot be read; or
            ``out`` is a file, or a non-empty folder that is not a bundle. ``out`` is left as it was then.
    """
    config = folder_config(folder, getattr(options, "mlflow", None))
    competition = config.competition.competition or "COMPETITION"
    check_folder(out, "--out")
    if out.exists() and any(out.iterdir()) and not (out / BUNDLE_JSON).is_file():
        raise ValueError(f"--out {out}: a non-empty folder that is not a bundle; give a new or a bundle folder")
    runs, weights, method = members(folder, options)
    test = test_files(config)
    tta_variants(options.tta, config.loader.size_schedule[-1][1])  # an unknown --tta, not found only on Kaggle
    for fold in (fold for run in runs for fold in rundir.read_fold_runs(run)):
        read_weights(fold.checkpoint, mmap=True)  # each opens: a damaged file is named before anything is written
    image = image_packages(Path(options.image_has) if options.image_has else DEFAULT_IMAGE)
    packages = missing_packages(project_requirements(), image)
    names = [run.name for run in runs]
    dataset = options.upload or f"YOUR-KAGGLE-NAME/{competition}-bundle"
    with replacing_folder(out) as build:
        for run, name in zip(runs, names):
            copy_model(run, build / MODELS / name, options.half)
        wheels = build_wheels(packages, build / WHEELS, Path(options.wheels_from) if options.wheels_from else None)
        manifest = {
            "competition": competition, "created": f"{datetime.now():%Y-%m-%d %H:%M}", "code": notes.git_state(),
            "source": str(folder), "models": names, "weights": weights, "method": method, "tta": options.tta,
            "tta_merge": options.tta_merge, "submission_format": config.competition.submission_format,
            "half": options.half, "test": test, "wheels": wheels, "packages": packages, "dataset": dataset,
        }
        files.write_text(build / BUNDLE_JSON, json.dumps(manifest, indent=1))
        notebook.write(build, manifest)
    checkpoints = sum(1 for _ in (out / MODELS).rglob("*.pt"))
    bundled = ", ".join(sorted(packages)) or "the project only"
    print(f"bundle {out}: {len(names)} model(s) ({checkpoints} checkpoints{', fp16' if options.half else ''}), "
          f"{len(wheels)} wheels ({bundled})")
    return manifest
