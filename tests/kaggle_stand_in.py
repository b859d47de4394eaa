"""The suite's only stand-in: Kaggle's client object (`kaggle.api.kaggle_api_extended.KaggleApi`), replaced at its
boundary. It serves a folder as a competition's files, records submissions and scores them after a number of
polls, and records dataset uploads and notebook pushes. Its methods keep the real client's names and parameters
(`tests/test_kaggle_api.py` compares the signatures when the kaggle package is installed); everything on our
side of it (unzipping, inspection, validation, recording) is the real code."""

from __future__ import annotations

import enum
import os
import types
import zipfile
from datetime import datetime
from pathlib import Path

import requests


class SubmissionStatus(enum.Enum):  # kagglesdk.competitions.types.submission_status.SubmissionStatus
    PENDING = 0
    COMPLETE = 1
    ERROR = 2


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error", response=response)


class StandInKaggleApi:
    """A competition ``name`` whose files are the folder ``files``; scores come from ``score(path)``."""

    def __init__(self, name: str, files: Path, score=lambda path: "0.99", pending_polls: int = 1,
                 refuse: int | None = None):
        self.name, self.files, self.score = name, Path(files), score
        self.pending_polls, self.refuse = pending_polls, refuse
        self.submitted: list[dict] = []
        self.datasets: dict[str, list[str]] = {}
        self.pushed: list[str] = []
        self.downloads = 0

    def _check(self, competition: str) -> None:
        if self.refuse:
            raise http_error(self.refuse)
        if competition != self.name:
            raise http_error(404)

    def _names(self) -> list[str]:
        return sorted(str(p.relative_to(self.files)).replace(os.sep, "/") for p in self.files.rglob("*") if p.is_file())

    def competition_list_files(self, competition: str, page_token: str | None = None, page_size: int = 20):
        self._check(competition)
        names = self._names()
        start = int(page_token or 0)
        page = [types.SimpleNamespace(name=n, total_bytes=(self.files / n).stat().st_size)
                for n in names[start : start + page_size]]
        following = str(start + page_size) if start + page_size < len(names) else ""
        return types.SimpleNamespace(files=page, next_page_token=following)

    def competition_download_files(self, competition: str, path: str | None = None, force: bool = False,
                                   quiet: bool = True, unzip: bool = False) -> None:
        self._check(competition)
        self.downloads += 1
        with zipfile.ZipFile(Path(path) / f"{competition}.zip", "w") as archive:
            for name in self._names():
                archive.write(self.files / name, name)

    def competition_submit(self, file_name: str | None, message: str, competition: str | None, quiet: bool = False,
                           sandbox: bool = False):
        self._check(competition)
        ref = 1000 + len(self.submitted)
        self.submitted.append({"ref": ref, "file": file_name, "message": message, "polls": 0,
                               "score": self.score(Path(file_name)), "date": datetime.now()})
        return types.SimpleNamespace(message="Successfully submitted", ref=ref)

    def competition_submissions(self, competition: str, group=None, sort=None, page_number: int = -1,
                                page_token: str = "", page_size: int = 20):
        self._check(competition)
        listed = []
        for entry in reversed(self.submitted):
            entry["polls"] += 1
            done = entry["polls"] > self.pending_polls
            listed.append(types.SimpleNamespace(
                ref=entry["ref"], date=entry["date"], description=entry["message"], file_name="submission.csv",
                status=SubmissionStatus.COMPLETE if done else SubmissionStatus.PENDING,
                public_score=entry["score"] if done else "", private_score="",
            ))
        return listed

    def dataset_status(self, dataset: str, format=None) -> str:
        if dataset not in self.datasets:
            raise http_error(404)
        return "ready"

    def dataset_create_new(self, folder: str, public: bool = False, quiet: bool = False, convert_to_csv: bool = True,
                           dir_mode: str = "skip", ignore_patterns=None):
        import json

        dataset = json.loads((Path(folder) / "dataset-metadata.json").read_text())["id"]
        self.datasets[dataset] = ["created"]
        return types.SimpleNamespace(error="", url=f"https://www.kaggle.com/datasets/{dataset}")

    def dataset_create_version(self, folder: str, version_notes: str, quiet: bool = False, convert_to_csv: bool = True,
                               delete_old_versions: bool = False, dir_mode: str = "skip", ignore_patterns=None):
        import json

        dataset = json.loads((Path(folder) / "dataset-metadata.json").read_text())["id"]
        self.datasets[dataset].append(version_notes)
        return types.SimpleNamespace(error="")

    def kernels_push(self, folder: str, timeout: str | None = None, acc: str | None = None, no_run: bool = False):
        self.pushed.append(folder)
        return types.SimpleNamespace(error="", url="https://www.kaggle.com/code/stand-in")
