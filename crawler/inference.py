"""CSS selectors for a listing page without a feed, inferred from its markup: the repeated
blocks that each hold a link to an article of the same site (and, where the page shows them,
a date), turned into the ``item``, ``link``, ``title``, ``date`` and ``next`` selectors of an
``html`` source. Pure: HTML text in, :class:`crawler.sources.Selectors` out."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from lxml import html as lxml_html
from lxml.etree import _Element
from parsel import Selector

from crawler.dates import parse_date
from crawler.sources import Selectors
from crawler.urls import absolute_url

MIN_ITEMS = 2
MIN_TITLE = 12  # characters of a headline; shorter link texts are menus and tags
_SKIP_ANCESTORS = frozenset({"nav", "header", "footer", "aside", "form", "select"})
_NEXT_WORDS = re.compile(r"^\s*(next|older|more|далее|следующая|вперед|вперёд|ещё|еще|növbəti|"
                         r"келесі|»|›|→|>>?)\s*(»|›|→|>)?\s*$", re.IGNORECASE)
_SAFE_CLASS = re.compile(r"^-?[_a-zA-Z][_a-zA-Z0-9-]*$")
_DIGITS = re.compile(r"\d+")
_MAX_DATE_TEXT = 60
# (path depth, first two directories, query pairs with id-like values as "#")
_Shape = tuple[int, tuple[str, ...], tuple[tuple[str, str], ...]]


@dataclass
class _Link:
    node: _Element
    url: str
    shape: _Shape


def infer_selectors(html: str, *, url: str, languages: list[str] | None = None) -> Selectors | None:
    """Selectors that pick out the page's list of articles, or None when it has none.

    :param html: the page as text.
    :param url: the page's URL (links resolve against it; "same site" is its host).
    :param languages: languages for reading dates (default: crawler.dates' set).
    """
    root = lxml_html.fromstring(html or "<html></html>", base_url=url)
    groups = _link_groups(root, url)
    if not groups:
        return None
    best = max(groups, key=lambda g: _score(g, languages))
    blocks = _blocks([link.node for link in best])
    if _nothing_beside_link(blocks[0], best[0].node):
        blocks = [link.node for link in best]
    item = _item_selector(root, blocks, best)
    if item is None:
        return None
    anchor_is_block = all(b is link.node for b, link in zip(blocks, best, strict=True))
    link_css = "::attr(href)" if anchor_is_block else _relative(blocks[0], best[0].node) + "::attr(href)"
    title = _title_selector(blocks, [link.node for link in best], languages)
    date = _date_selector(blocks, languages)
    return Selectors(item=item, link=link_css, title=title, date=date, next=_next_selector(root, url))


# --- candidate links --------------------------------------------------------------------------


def _site(host: str | None) -> str:
    return (host or "").lower().removeprefix("www.")


def _link_groups(root: _Element, page_url: str) -> list[list[_Link]]:
    """Same-site article links grouped by where they sit (tag path) and what they look like
    (URL shape); groups of at least MIN_ITEMS distinct URLs."""
    site = _site(urlsplit(page_url).hostname)
    groups: dict[tuple[object, ...], list[_Link]] = defaultdict(list)
    for node in root.iter("a"):
        href = node.get("href")
        target = absolute_url(page_url, href)
        if not target or _site(urlsplit(target).hostname) != site or target.split("#")[0] == page_url:
            continue
        if urlsplit(target).path in ("", "/") and not urlsplit(target).query:
            continue
        if any(a.tag in _SKIP_ANCESTORS for a in node.iterancestors()):
            continue
        shape = _url_shape(target)
        groups[(_tag_path(node), shape)].append(_Link(node, target, shape))
    out = []
    for links in groups.values():
        unique = list({link.url: link for link in links}.values())
        if len(unique) >= MIN_ITEMS and len(unique) == len(links):
            out.append(links)
    return out


def _url_shape(url: str) -> _Shape:
    """What article URLs of one list share: the path's depth and the query's keys, with the
    values of keys that do not look like ids."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    head = tuple(segments[:-1]) if len(segments) > 1 else ()
    query = tuple(sorted((k, "#" if _DIGITS.fullmatch(v) else v) for k, v in parse_qsl(parts.query)))
    return (len(segments), head[:2], query)


def _tag_path(node: _Element) -> tuple[str, ...]:
    path = []
    for element in [node, *node.iterancestors()]:
        if element.tag in ("html", "body"):
            break
        path.append(f"{element.tag}.{'.'.join(sorted(_classes(element)))}")
    return tuple(reversed(path))


def _classes(node: _Element) -> list[str]:
    return [c for c in (node.get("class") or "").split() if _SAFE_CLASS.match(c)]


def _text(node: _Element) -> str:
    return " ".join(node.text_content().split())


def _score(group: list[_Link], languages: list[str] | None) -> float:
    """Many links with headline-long texts, in blocks that show dates."""
    titles = [len(_text(link.node)) for link in group]
    long_enough = sum(1 for n in titles if n >= MIN_TITLE)
    if long_enough < MIN_ITEMS:
        return -1.0
    blocks = _blocks([link.node for link in group])
    dated = sum(1 for b in blocks if _date_node(b, languages) is not None)
    return long_enough * (1 + min(sum(titles) / len(titles), 80) / 40) * (2 if dated >= len(blocks) / 2 else 1)


# --- item blocks --------------------------------------------------------------------------------


def _blocks(anchors: list[_Element]) -> list[_Element]:
    """For each anchor, the largest ancestor-or-self that holds no other anchor's block:
    climb while every parent is still distinct."""
    current = list(anchors)
    while True:
        parents = [node.getparent() for node in current]
        if any(p is None or p.tag in ("body", "html") for p in parents):
            return current
        if len({id(p) for p in parents}) < len(parents):
            return current
        current = parents


def _nothing_beside_link(block: _Element, anchor: _Element) -> bool:
    """True when the block's text is (nearly) all its link's: the link is the item."""
    return len(_text(block)) - len(_text(anchor)) < MIN_TITLE


def _step(node: _Element) -> str:
    classes = _classes(node)
    tag: str = node.tag  # lxml ships no types; _step only sees elements, whose tag is a str
    return tag + "".join(f".{c}" for c in classes)


def _item_selector(root: _Element, blocks: list[_Element], links: list[_Link]) -> str | None:
    """The shortest CSS selector that selects exactly ``blocks`` (with the links' URL
    pattern as attribute conditions when the blocks are the anchors themselves)."""
    page = Selector(root=root)
    wanted = {id(b) for b in blocks}
    anchors = all(b is link.node for b, link in zip(blocks, links, strict=True))
    condition = _href_condition(links) if anchors else ""
    chain: list[str] = []
    node: _Element | None = blocks[0]
    while node is not None and node.tag not in ("html", "body"):
        chain.insert(0, _step(node))
        for start in range(len(chain) - 1, -1, -1):
            css = " > ".join(chain[start:]) + (condition if anchors else "")
            found = page.css(css)
            if {id(s.root) for s in found} == wanted:
                return css
        node = node.getparent()
    return None


def _href_condition(links: list[_Link]) -> str:
    """``[href*='k=v'][href*='id=']`` for a query-string URL pattern; nothing for paths."""
    query = links[0].shape[2]
    parts = []
    for key, value in query:
        if value == "#":
            parts.append(f"[href*='{key}=']")
        elif "'" not in f"{key}{value}":
            parts.append(f"[href*='{key}={value}']")
    return "".join(parts)


def _relative(block: _Element, target: _Element) -> str:
    """A CSS path from ``block`` down to ``target`` (tag, classes, nth-of-type where needed)."""
    steps: list[str] = []
    node = target
    while node is not block and node is not None:
        parent = node.getparent()
        step = _step(node)
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag and _step(c) == step]
            if len(same) > 1:
                position = [c for c in parent if c.tag == node.tag].index(node) + 1
                step = f"{node.tag}:nth-of-type({position})" + "".join(f".{c}" for c in _classes(node))
        steps.insert(0, step)
        node = parent
    return " > ".join(steps)


# --- fields ---------------------------------------------------------------------------------------


def _title_selector(blocks: list[_Element], anchors: list[_Element], languages: list[str] | None) -> str:
    """The link when it is inside the block and reads as a headline; else the block's longest
    text-only element that is not a date; else the link's own text."""
    block, anchor = blocks[0], anchors[0]
    if block is not anchor and len(_text(anchor)) >= MIN_TITLE:
        return _relative(block, anchor)
    best: _Element | None = None
    for node in block.iter():
        if not isinstance(node.tag, str) or node is block or any(isinstance(c.tag, str) for c in node):
            continue
        text = _text(node)
        if len(text) >= MIN_TITLE and not _looks_like_date(text, languages) and \
                (best is None or len(text) > len(_text(best))):
            best = node
    if best is not None:
        css = _relative(block, best)
        if all(Selector(root=b).css(css) for b in blocks):
            return css
    return "::text" if block is anchor else _relative(block, anchor) + "::text"


def _looks_like_date(text: str, languages: list[str] | None) -> bool:
    return len(text) <= _MAX_DATE_TEXT and any(ch.isdigit() for ch in text) and \
        parse_date(text, languages=languages) is not None


def _date_node(block: _Element, languages: list[str] | None) -> _Element | None:
    """The innermost element of ``block`` whose own text is a date (``<time>`` first)."""
    for node in block.iter("time"):
        if node.get("datetime") or _looks_like_date(_text(node), languages):
            return node
    for node in block.iter():
        if not isinstance(node.tag, str) or any(isinstance(c.tag, str) for c in node):
            continue
        if _looks_like_date(_text(node), languages):
            return node
    return None


def _date_selector(blocks: list[_Element], languages: list[str] | None) -> str | None:
    node = _date_node(blocks[0], languages)
    if node is None:
        return None
    if node.tag == "time" and node.get("datetime") and not _looks_like_date(_text(node), languages):
        css = _relative(blocks[0], node) + "::attr(datetime)"
    else:
        css = _relative(blocks[0], node) + "::text"
    found = sum(1 for b in blocks if Selector(root=b).css(css).get())
    return css if found >= len(blocks) / 2 else None


def _next_selector(root: _Element, url: str) -> str | None:
    """None when the page has a rel="next" link (the default); else the pagination link
    whose text or class says "next"."""
    page = Selector(root=root)
    if page.xpath("//link[contains(@rel, 'next')][@href] | //a[contains(@rel, 'next')][@href]"):
        return None
    for node in root.iter("a"):
        href = node.get("href")
        if not href or not absolute_url(url, href):
            continue
        classes = " ".join(_classes(node)).lower()
        if "next" in classes or _NEXT_WORDS.match(_text(node) or ""):
            css = _step(node)
            if _classes(node) and len(page.css(css)) == 1:
                return css
    return None
