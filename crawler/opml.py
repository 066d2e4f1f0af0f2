"""OPML, the subscription lists of feed readers: read with listparser (OPML 1.0/2.0, nested
outline folders), written as OPML 2.0 from the configured feed sources."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from xml.etree import ElementTree

from crawler.discovery import slug, source_id_for, unique_id
from crawler.sources import SourceSpec, check_http_url
from crawler.urls import canonical_url


class OpmlError(ValueError):
    """The file is not an OPML subscription list (crawler.errors lists it)."""


@dataclass(frozen=True)
class Subscription:
    url: str
    title: str
    folders: tuple[str, ...] = ()


@dataclass
class Imported:
    """What an import makes of a list: new feed sources and the outlines it left out."""

    sources: list[SourceSpec] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one message per outline left out


def read_opml(data: bytes) -> list[Subscription]:
    """Every outline with an ``xmlUrl``, in document order, folders flattened."""
    import listparser

    parsed = listparser.parse(data)
    if not parsed.feeds and (parsed.bozo or not parsed.meta):
        reason = parsed.bozo_exception or "no <opml> document"
        raise OpmlError(f"not an OPML subscription list: {reason}")
    return [Subscription(url=str(f.url).strip(), title=" ".join(str(f.get("title") or "").split()),
                         folders=tuple(f.categories[0]) if f.get("categories") else ())
            for f in parsed.feeds]


def import_subscriptions(subscriptions: Sequence[Subscription], existing: Iterable[SourceSpec]) -> Imported:
    """Feed sources for ``subscriptions``: ids from titles (else host and path), unique;
    outlines whose URL a configured source (or an earlier outline) already has are skipped."""
    existing = list(existing)
    taken = {s.id for s in existing}
    known = {canonical_url(s.url): s.id for s in existing}
    out = Imported()
    for sub in subscriptions:
        try:
            url = check_http_url(sub.url)
        except ValueError as exc:
            out.skipped.append(f"{sub.title or sub.url}: {exc}")
            continue
        key = canonical_url(url)
        if key in known:
            out.skipped.append(f"{url}: already configured as {known[key]!r}")
            continue
        source_id = unique_id(slug(sub.title), taken) if sub.title and slug(sub.title) != "source" \
            else source_id_for(url, taken)
        taken.add(source_id)
        known[key] = source_id
        out.sources.append(SourceSpec(id=source_id, name=sub.title, url=url, kind="feed"))
    return out


def write_opml(sources: Iterable[SourceSpec], *, title: str = "newsmon feed sources") -> str:
    """An OPML 2.0 document with one outline per feed source (other kinds have no feed URL)."""
    root = ElementTree.Element("opml", version="2.0")
    head = ElementTree.SubElement(root, "head")
    ElementTree.SubElement(head, "title").text = title
    ElementTree.SubElement(head, "dateCreated").text = formatdate(usegmt=True)
    body = ElementTree.SubElement(root, "body")
    for spec in sources:
        if spec.kind != "feed":
            continue
        attrs = {"type": "rss", "text": spec.name or spec.id, "title": spec.name or spec.id,
                 "xmlUrl": spec.url}
        if spec.language:
            attrs["language"] = spec.language
        ElementTree.SubElement(body, "outline", attrs)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
