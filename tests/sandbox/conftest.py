"""The ``google_sandbox`` fixture: a running sandbox with one OAuth client and one account.

Constants for the client, redirect URI and account are in ``email_service.sandbox.testing``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from email_service.sandbox import GoogleSandbox
from email_service.sandbox.testing import make_test_sandbox


@pytest.fixture
def google_sandbox() -> Iterator[GoogleSandbox]:
    with make_test_sandbox() as sandbox:
        yield sandbox
