"""The ingress's URL map and its handler table agree: no URL without a handler, no handler without a URL."""
from __future__ import annotations

from bus.ingress import http


def test_every_url_rule_has_a_handler_and_every_handler_a_rule():
    assert set(http.HANDLERS) == {rule.endpoint for rule in http.URLS.iter_rules()}
