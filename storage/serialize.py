"""The ITEM JSON shape of the contract, built from rows (search, show, export, webhooks)."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import datetime
from typing import Any

from storage.models import Item, ItemVersion, Match


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with an explicit UTC offset, or None."""
    return value.isoformat() if value is not None else None


def match_dict(match: Match) -> dict[str, Any]:
    return {
        "organisation": match.organisation,
        "alias": match.alias,
        "form": match.form,
        "snippet": match.snippet,
    }


def item_dict(item: Item, matches: list[Match] | None = None) -> dict[str, Any]:
    """The contract's ITEM object (without text and versions)."""
    rows = item.matches if matches is None else matches
    return {
        "id": item.id,
        "source": item.source_id,
        "sources": item.source_ids,
        "url": item.url,
        "canonical_url": item.canonical_url,
        "title": item.title,
        "published_at": iso(item.published_at),
        "first_seen_at": iso(item.first_seen_at),
        "language": item.language,
        "organisations": sorted({m.organisation for m in rows}),
        "matches": [match_dict(m) for m in rows],
        "story_id": item.story_id,
        "version": item.version,
        "content_hash": item.content_hash,
        **({"removed": True} if _removed(item) else {}),
    }


def _removed(row: Item | ItemVersion) -> bool:
    """The row's ``removed`` flag as loaded (a row just inserted has the column's default,
    False, without a query to read it back)."""
    return bool(row.__dict__.get("removed"))  # the instance state: no load triggered


def version_dict(version: ItemVersion, *, with_raw: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": version.version,
        "fetched_at": iso(version.fetched_at),
        "title": version.title,
        "text": version.text,
        "content_hash": version.content_hash,
        **({"removed": True} if _removed(version) else {}),
    }
    if with_raw:
        out["published_at"] = iso(version.published_at)
        out["raw_url"] = version.raw_url
        out["raw_status"] = version.raw_status
        out["raw_headers"] = json.loads(version.raw_headers) if version.raw_headers else {}
        out["raw_zlib_base64"] = base64.b64encode(version.raw).decode() if version.raw else None
    return out


def raw_body(version: ItemVersion) -> bytes:
    return zlib.decompress(version.raw) if version.raw else b""
