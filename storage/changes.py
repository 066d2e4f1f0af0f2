"""Alert events for changes to a stored item: ``edit`` (a new version of its title or text,
found by a revisit or in its feed) and ``removed`` (its page is gone), for the channels that
take them (DESIGN.md, Alerts)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from storage.diffs import short_word_diff
from storage.models import AlertEvent, Item
from storage.serialize import item_dict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from storage.repository import ChannelRule


def change_summary(from_version: int, old_title: str, old_text: str, item: Item) -> dict[str, Any]:
    """The webhook body's ``changes``: versions, the title pair when it changed, a short word
    diff of the text (the longest changed runs first)."""
    return {"from_version": from_version, "to_version": item.version,
            "title": [old_title, item.title] if old_title != item.title else None,
            "diff": short_word_diff(old_text, item.text)}


def change_events(session: Session, item: Item, channels: Sequence[ChannelRule],
                  event: Literal["edit", "removed"], organisations: list[str],
                  changes: dict[str, object], now: datetime) -> list[str]:
    """``edit``/``removed`` events of an item that matches ``organisations``, one per channel
    that takes such events and wants one of them (and whose sources and query admit it)."""
    ids = []
    for channel in channels:
        if event not in channel.events or not channel.admits(item.source_ids, item.title, item.text):
            continue
        wanted = [o for o in organisations if channel.wants(o)]
        if not wanted:
            continue
        event_id = str(uuid.uuid4())
        payload = {"event_id": event_id, "event": event, "organisations": wanted,
                   "item": item_dict(item), "changes": changes}
        session.add(AlertEvent(
            event_id=event_id, channel=channel.id, item_id=item.id, story_id=item.story_id,
            organisations=json.dumps(wanted), payload=json.dumps(payload, ensure_ascii=False),
            created_at=now, published_at=item.published_at, first_seen_at=item.first_seen_at,
            next_attempt_at=now))
        ids.append(event_id)
    return ids
