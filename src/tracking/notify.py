"""Messages to the user when a run ends: a JSON POST to a webhook, or an e-mail.

No trainer we compare with (ignite, Lightning, timm) has these; the standard library's ``urllib.request`` and
``smtplib`` do the sending, so there is no dependency to install.

- ``https://...``: a JSON body with the message under ``text`` (Slack incoming webhooks), ``content`` (Discord)
  and ``message`` (ntfy's JSON publishing reads ``topic``, ``title`` and ``message``; posted to a topic URL the
  whole body is the message), plus ``title``, ``status`` and the run's ``fields``.
- ``mailto:addr``: an e-mail through the SMTP server in ``SMTP_HOST`` (default localhost), ``SMTP_PORT``
  (default 25; 465 uses SSL), ``SMTP_USER``/``SMTP_PASSWORD`` (login when set), ``SMTP_FROM`` (default
  ``kaggle-trainer@<host>``), ``SMTP_STARTTLS=1``.

A failing message is logged as a warning and never raises: a notification must not break the run it reports.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import urllib.request
from collections.abc import Mapping, Sequence
from email.message import EmailMessage

logger = logging.getLogger(__name__)

TIMEOUT_S = 10.0


def send(targets: Sequence[str], title: str, text: str, fields: Mapping[str, object] | None = None) -> list[str]:
    """Sends the message to every target (webhook URLs and ``mailto:`` addresses).

    Args:
        targets: ``--notify`` values.
        title: one line (the status and the run).
        text: the message body (a few lines).
        fields: machine-readable details for webhooks (status, run folder, score...).

    Returns:
        The targets that failed (each logged with its reason).
    """
    failed = []
    for target in targets:
        try:
            if target.startswith("mailto:"):
                send_mail(target.removeprefix("mailto:"), title, text, os.environ)
            else:
                post_json(target, {"title": title, "text": text, "content": text, "message": text, **(fields or {})})
        except (OSError, smtplib.SMTPException, ValueError) as error:
            logger.warning("notification to %s failed: %s", redact(target), error)
            failed.append(target)
    return failed


def post_json(url: str, body: Mapping[str, object]) -> None:
    """POSTs ``body`` as JSON to ``url``.

    Raises:
        OSError: the server cannot be reached, or answers with an HTTP error (``urllib.error.HTTPError``).
    """
    request = urllib.request.Request(
        url,
        data=json.dumps(body, default=str).encode(),
        headers={"Content-Type": "application/json", "Title": str(body.get("title", ""))[:200]},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        response.read()


def send_mail(to: str, subject: str, text: str, environ: Mapping[str, str]) -> None:
    """Sends a plain-text e-mail through the SMTP settings in ``environ`` (see the module doc).

    Raises:
        OSError, smtplib.SMTPException: the server cannot be reached or refuses the message.
        ValueError: a non-numeric ``SMTP_PORT``.
    """
    host, port = environ.get("SMTP_HOST", "localhost"), int(environ.get("SMTP_PORT", "25"))
    message = EmailMessage()
    message["From"] = environ.get("SMTP_FROM", f"kaggle-trainer@{socket.gethostname()}")
    message["To"], message["Subject"] = to, subject
    message.set_content(text)
    smtp_class = smtplib.SMTP_SSL if port == 465 else smtplib.SMTP
    with smtp_class(host, port, timeout=TIMEOUT_S) as smtp:
        if environ.get("SMTP_STARTTLS", "") not in ("", "0"):
            smtp.starttls()
        if environ.get("SMTP_USER"):
            smtp.login(environ["SMTP_USER"], environ.get("SMTP_PASSWORD", ""))
        smtp.send_message(message)


def redact(target: str) -> str:
    """A target as it may be logged: a webhook URL without its path (the path holds the secret token)."""
    if target.startswith("mailto:"):
        return target
    scheme, _, rest = target.partition("://")
    return f"{scheme}://{rest.split('/')[0]}/..."
