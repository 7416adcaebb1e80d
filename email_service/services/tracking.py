"""Open and click tracking inside the message builder, and the tracking endpoints' recording."""

from __future__ import annotations

from email_service.models import EmailSendQueue


def prepare_tracked_html(*, message: EmailSendQueue, html: str) -> str:
    """The body as it goes out: links rewritten to tracked URLs and the open pixel added.

    The seam the sending pipeline's message builder calls for every message; the tracking
    issue gives it its body (until then the HTML goes out as written).
    """
    return html
