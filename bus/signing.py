"""Standard Webhooks signatures for deliveries (pure): webhook-id, webhook-timestamp, webhook-signature."""
from __future__ import annotations

import base64
import hashlib
import hmac


def headers(event_id: str, body: bytes, keys: tuple[bytes, ...], now: float) -> dict[str, str]:
    """Headers proving the bus sent this body; one v1 signature per key, so a receiver
    mid-rotation verifies with either its old or its new secret."""
    timestamp = str(int(now))
    signed = f"{event_id}.{timestamp}.".encode() + body
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys
    )
    return {"webhook-id": event_id, "webhook-timestamp": timestamp, "webhook-signature": signatures}
