"""The one boundary to Kaggle: the official ``kaggle`` package's `KaggleApi`, authenticated, and its errors as
one line saying what to do. Everything in `src.kaggle` receives the client object, so the tests hand it a
stand-in (``tests/kaggle_stand_in.py``) and the code on our side of it runs for real."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

CREDENTIALS = (
    "no Kaggle credentials: create a token at https://www.kaggle.com/settings (API, Create New Token) and put "
    "kaggle.json in ~/.kaggle/ (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY"
)


def connect():
    """An authenticated ``kaggle.api.kaggle_api_extended.KaggleApi``.

    Raises:
        ValueError: the ``kaggle`` package is not installed, or no credentials were found (one line each).
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its import tries to log in and prints a page of help
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise ValueError("the Kaggle API needs the kaggle package: pip install kaggle") from None
    api = KaggleApi()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise ValueError(CREDENTIALS) from None
    return api


@contextlib.contextmanager
def calling(competition: str) -> Iterator[None]:
    """Turns the HTTP errors of the calls inside into one line naming ``competition`` and what to do.

    Raises:
        ValueError: 401 (bad credentials), 403 (rules not accepted), 404 (no such competition), or another
            HTTP or connection error.
    """
    try:
        yield
    except Exception as error:
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        if status == 401:
            raise ValueError(f"Kaggle refused the credentials (401); {CREDENTIALS}") from None
        if status == 403:
            raise ValueError(
                f"Kaggle refused access to {competition!r} (403): accept the competition's rules at "
                f"https://www.kaggle.com/competitions/{competition}/rules, then run the command again"
            ) from None
        if status == 404:
            raise ValueError(f"no competition {competition!r} on Kaggle (404): use the name in its URL") from None
        if status is not None or type(error).__module__.startswith(("requests", "urllib3")):
            raise ValueError(f"Kaggle API call for {competition!r} failed: {error}") from None
        raise
