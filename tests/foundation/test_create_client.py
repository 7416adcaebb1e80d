"""`manage.py create_client` as CONTRACT.md says."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from email_service.models import Campaign, Client

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def create(*args: str) -> str:
    out = io.StringIO()
    call_command("create_client", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_client_and_its_default_campaign_and_prints_the_uuid_last():
    output = create(
        "--name", "Acme", "--email", "Owner@Acme.TEST", "--password", "Correct-Horse-77", "--timezone", "Europe/Paris"
    )
    client_id = uuid.UUID(output.strip().splitlines()[-1])
    client = Client.objects.get(pk=client_id)
    assert (client.name, client.email, client.timezone) == ("Acme", "owner@acme.test", "Europe/Paris")
    assert client.check_password("Correct-Horse-77")
    assert Campaign.objects.get(client=client).is_default


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--email", "not-an-email", "--password", "Correct-Horse-77"], "valid email"),
        (["--email", "a@b.test", "--password", "short"], "too short"),
        (["--email", "a@b.test", "--password", "password"], "too common"),
        (["--email", "a@b.test", "--password", "12345678901"], "entirely numeric"),
        (["--email", "a@b.test", "--password", "Correct-Horse-77", "--timezone", "Mars/Olympus"], "time zone"),
    ],
)
def test_bad_input_creates_nothing(args, words):
    with pytest.raises(CommandError) as error:
        create("--name", "Acme", *args)
    assert words in str(error.value)
    assert Client.objects.count() == 0
    assert Campaign.objects.count() == 0


def test_a_duplicate_email_creates_nothing(alice):
    with pytest.raises(CommandError) as error:
        create("--name", "Other", "--email", "ALICE@alice.test", "--password", "Correct-Horse-77")
    assert "already exists" in str(error.value)
    assert Client.objects.count() == 1


def test_the_command_exits_non_zero_with_one_line(tmp_path):
    """As a shell sees it: a non-zero exit and one line of reason (no traceback)."""
    env = {**os.environ, "DATABASE_URL": "sqlite:///" + str(tmp_path / "db.sqlite3"), "OREE_VAR_DIR": str(tmp_path)}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=120)
    result = subprocess.run(
        [*manage, "create_client", "--name", "A", "--email", "a@b.test", "--password", "short"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "too short" in result.stderr
