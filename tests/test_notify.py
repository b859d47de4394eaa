import logging

from src.tracking import notify
from tests.helpers import free_port, smtp_server, webhook_server


def test_a_webhook_gets_the_message_as_json():
    with webhook_server() as (url, received):
        failed = notify.send([url], "finished: run-a", "best 0.98\nwall 3m", fields={"status": "finished"})
    assert failed == []
    (body,) = received
    assert body["_path"] == "/hooks/secret-token"
    assert body["title"] == "finished: run-a"
    assert body["text"] == body["content"] == body["message"] == "best 0.98\nwall 3m"  # Slack, Discord, ntfy
    assert body["status"] == "finished"


def test_mail_goes_through_the_smtp_server_of_the_environment(monkeypatch):
    with smtp_server() as (environ, received):
        for key, value in environ.items():
            monkeypatch.setenv(key, value)
        assert notify.send(["mailto:me@example.org"], "crashed: run-b", "error: RuntimeError: boom") == []
    (message,) = received
    assert message["To"] == "me@example.org"
    assert message["Subject"] == "crashed: run-b"
    assert message["From"] == "trainer@test"
    assert "error: RuntimeError: boom" in message.get_payload()


def test_a_failing_target_is_logged_without_its_token_and_does_not_stop_the_others(caplog):
    dead = f"http://127.0.0.1:{free_port()}/hooks/secret-token"  # nothing listens there
    with webhook_server() as (url, received), caplog.at_level(logging.WARNING, logger="src.tracking.notify"):
        failed = notify.send([dead, url], "finished: run-c", "text")
    assert failed == [dead]
    assert len(received) == 1
    assert "notification to http://127.0.0.1:" in caplog.text
    assert "secret-token" not in caplog.text
