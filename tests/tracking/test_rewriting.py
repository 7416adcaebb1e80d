"""Rewriting at send time: a real email's links become tracked URLs that land byte-exact on the original."""

from __future__ import annotations

import re
import struct
import zlib

import pytest
from django.conf import settings

from email_service.models import EmailClickTracking, EmailTrackingPixel
from email_service.tracking.hits import PIXEL_PNG, prepare_tracked_html
from tests.tracking.conftest import drain, sent_message

pytestmark = pytest.mark.django_db

# Real-world French marketing HTML: curly quotes, entities and line lengths as found in the wild.
NEWSLETTER = """<!DOCTYPE html>
<html lang="fr">
<head><meta charset="utf-8"><title>Café &amp; Co — offre</title>
<style>td { font-family: Arial; }</style></head>
<body style="margin:0;padding:0;background:#F4F4F4">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">
  <tr>
    <td align="center" style="padding: 24px 0; font-size:16px; color:#333333;">
      <p>Bonjour Zoë, voici l’offre « spéciale » pour Köln &amp; Zürich &mdash; 10&nbsp;% de remise&#33;</p>
      <A HREF="https://shop.example.com/products?id=42&amp;utm_source=mail&amp;ref=caf%C3%A9#reviews" STYLE="color:#0066CC">Voir le produit</A>
      <a href='https://example.org/path/with%20space?q=a+b&x=1' class='btn'>Single quoted</a>
      <a class=plain href=https://example.net/unquoted>Unquoted</a>
      <a href="https://exämple.de/straße?stadt=Köln">Non-ASCII</a>
      <a href="  https://padded.example.com/page  ">Padded</a>
      <a href="HTTPS://UPPER.example.com/Case?Q=1">Upper scheme</a>
      <a href="mailto:sales@example.com?subject=Hi%20there">Mail us</a>
      <a href="tel:+33123456789">Call</a>
      <a href="#section-2">Jump</a>
      <a href="/relative/path">Relative</a>
      <a name="anchor-only">Anchor</a>
      <map name="m"><area shape="rect" coords="0,0,10,10" href="https://area.example.com/a" alt="Area"></map>
      <!-- <a href="https://commented.example.com/">in a comment</a> -->
      <p style="font-size:11px">Plus d’emails ? <a href="{{unsubscribe_url}}">Se désinscrire</a></p>
    </td>
  </tr>
</table>
</body>
</html>"""  # noqa: E501, RUF001

EXPECTED_DESTINATIONS = [
    "https://shop.example.com/products?id=42&utm_source=mail&ref=caf%C3%A9#reviews",
    "https://example.org/path/with%20space?q=a+b&x=1",
    "https://example.net/unquoted",
    "https://exämple.de/straße?stadt=Köln",
    "https://padded.example.com/page",
    "HTTPS://UPPER.example.com/Case?Q=1",
    "https://area.example.com/a",
]


@pytest.fixture
def tracked(alice):
    message = sent_message(alice)
    return message, prepare_tracked_html(message=message, html=NEWSLETTER)


def tokens_in(html: str) -> list[str]:
    return re.findall(r"/api/track/click/([A-Za-z0-9_-]+)", html)


def test_every_http_link_is_stored_with_its_exact_destination_in_order(tracked):
    message, _ = tracked
    stored = list(EmailClickTracking.objects.filter(message=message).order_by("position").values_list("url", flat=True))
    assert stored == EXPECTED_DESTINATIONS


def test_each_tracked_link_redirects_to_the_byte_exact_original(tracked, browser):
    _, html = tracked
    tokens = tokens_in(html)
    assert len(tokens) == len(EXPECTED_DESTINATIONS)
    locations = [browser.get(f"/api/track/click/{token}")["Location"] for token in tokens]
    assert locations[:3] == EXPECTED_DESTINATIONS[:3]
    # A Location header is ASCII: non-ASCII characters travel percent-encoded (what a browser sends anyway).
    assert locations[3] == "https://ex%C3%A4mple.de/stra%C3%9Fe?stadt=K%C3%B6ln"
    assert locations[4:] == EXPECTED_DESTINATIONS[4:]


def test_the_rest_of_the_html_is_untouched(tracked):
    message, html = tracked
    base = settings.PUBLIC_BASE_URL
    # Undo exactly our changes: what remains must be the original, byte for byte.
    tokens = tokens_in(html)
    restored = html
    originals = [
        "https://shop.example.com/products?id=42&amp;utm_source=mail&amp;ref=caf%C3%A9#reviews",
        "https://example.org/path/with%20space?q=a+b&x=1",
        "https://example.net/unquoted",
        "https://exämple.de/straße?stadt=Köln",
        "  https://padded.example.com/page  ",
        "HTTPS://UPPER.example.com/Case?Q=1",
        "https://area.example.com/a",
    ]
    for token, original in zip(tokens, originals, strict=True):
        restored = restored.replace(f"{base}/api/track/click/{token}", original, 1)
    pixel = EmailTrackingPixel.objects.get(message=message)
    pixel_tag = re.search(r"<img src=\"[^\"]*/api/track/open/[^\"]+\"[^>]*/>", restored).group(0)
    assert pixel.token in pixel_tag
    restored = restored.replace(pixel_tag, "")
    unsubscribe = f"{base}/u/{message.unsubscribe_token}"
    assert restored == NEWSLETTER.replace("{{unsubscribe_url}}", unsubscribe)


def test_attribute_case_and_quoting_survive(tracked):
    _, html = tracked
    assert re.search(r'<A HREF="[^"]+/api/track/click/[\w-]+" STYLE="color:#0066CC">', html)
    assert re.search(r"<a href='[^']+/api/track/click/[\w-]+' class='btn'>", html)
    assert re.search(r"<a class=plain href=\S+/api/track/click/[\w-]+>", html)
    assert "Köln &amp; Zürich &mdash; 10&nbsp;% de remise&#33;" in html


def test_mailto_tel_anchors_relative_commented_and_unsubscribe_links_are_left_alone(tracked):
    message, html = tracked
    assert '<a href="mailto:sales@example.com?subject=Hi%20there">' in html
    assert '<a href="tel:+33123456789">' in html
    assert '<a href="#section-2">' in html
    assert '<a href="/relative/path">' in html
    assert '<!-- <a href="https://commented.example.com/">in a comment</a> -->' in html
    assert f'<a href="{settings.PUBLIC_BASE_URL}/u/{message.unsubscribe_token}">Se désinscrire</a>' in html


def test_one_invisible_pixel_goes_just_before_the_end_of_the_body(tracked):
    message, html = tracked
    pixel = EmailTrackingPixel.objects.get(message=message)
    assert html.count("/api/track/open/") == 1
    assert f'{settings.PUBLIC_BASE_URL}/api/track/open/{pixel.token}.png" width="1" height="1" alt=""' in html
    assert re.search(r"/>\n?</body>", html)


def test_building_the_same_message_again_keeps_the_tokens_already_sent(tracked):
    message, first = tracked
    again = prepare_tracked_html(message=message, html=NEWSLETTER)
    assert again == first
    assert EmailClickTracking.objects.filter(message=message).count() == len(EXPECTED_DESTINATIONS)


def test_the_clients_switches_turn_click_and_open_tracking_off(alice):
    alice.click_tracking = False
    alice.open_tracking = False
    alice.save()
    message = sent_message(alice)
    html = prepare_tracked_html(message=message, html=NEWSLETTER)
    unsubscribe = f"{settings.PUBLIC_BASE_URL}/u/{message.unsubscribe_token}"
    assert html == NEWSLETTER.replace("{{unsubscribe_url}}", unsubscribe)
    assert not EmailClickTracking.objects.filter(message=message).exists()
    assert not EmailTrackingPixel.objects.filter(message=message).exists()


def test_open_tracking_alone_adds_the_pixel_but_keeps_links(alice):
    alice.click_tracking = False
    alice.save()
    message = sent_message(alice)
    html = prepare_tracked_html(message=message, html='<p><a href="https://a.example/">a</a></p>')
    assert '<a href="https://a.example/">a</a>' in html
    assert "/api/track/open/" in html


def test_a_fragment_without_body_gets_its_pixel_at_the_end(alice):
    message = sent_message(alice)
    html = prepare_tracked_html(message=message, html="<p>Hi <b>there</b></p>")
    assert html.startswith("<p>Hi <b>there</b></p><img src=")


def test_clicks_of_a_rewritten_email_are_recorded_against_the_right_link(tracked, browser):
    message, html = tracked
    token = tokens_in(html)[1]
    browser.get(f"/api/track/click/{token}")
    drain()
    event = message.events.get(event_type="click")
    assert event.link.url == EXPECTED_DESTINATIONS[1]


def test_the_pixel_is_a_valid_transparent_png():
    assert PIXEL_PNG[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, {}
    while offset < len(PIXEL_PNG):
        (length,) = struct.unpack(">I", PIXEL_PNG[offset : offset + 4])
        kind = PIXEL_PNG[offset + 4 : offset + 8]
        data = PIXEL_PNG[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", PIXEL_PNG[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, kind
        chunks[kind] = data
        offset += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, color_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, color_type) == (1, 1, 8, 6)
    assert zlib.decompress(chunks[b"IDAT"]) == b"\x00\x00\x00\x00\x00"  # filter byte, then RGBA all zero: transparent
