"""OPML 1.0/2.0 subscription lists: read and write, pure functions.

Folders are the ``text`` (or ``title``) of the outlines that contain feed
outlines; nested folders are joined with " / ". Relative ``xmlUrl`` values
are resolved against a base (the OPML file's own location), so a bundle of
local feed files can ship with its OPML.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

from aggregator.models import Feed


class OPMLError(ValueError):
    """The document is not a readable OPML subscription list."""


@dataclass(frozen=True)
class Subscription:
    url: str
    title: str | None
    folder: str | None


def _resolve(url: str, base_dir: Path | None) -> str:
    if urlsplit(url).scheme or base_dir is None or os.path.isabs(url):
        return url
    return str((base_dir / url).resolve())


def parse_opml(data: bytes, *, base_dir: Path | None = None) -> list[Subscription]:
    if b"<!ENTITY" in data[:4096]:
        raise OPMLError("OPML with entity declarations is refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise OPMLError(f"not OPML: {exc}") from None
    if root.tag != "opml":
        raise OPMLError(f"not OPML: root element is <{root.tag}>")
    body = root.find("body")
    if body is None:
        raise OPMLError("not OPML: no <body>")
    found: list[Subscription] = []
    seen: set[str] = set()

    def walk(node: ET.Element, folders: tuple[str, ...]) -> None:
        for outline in node.findall("outline"):
            url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
            label = (outline.get("title") or outline.get("text") or "").strip() or None
            if url:
                url = _resolve(url, base_dir)
                if url not in seen:
                    seen.add(url)
                    found.append(Subscription(url, label, " / ".join(folders) or None))
                walk(outline, folders)
            else:
                walk(outline, folders + ((label,) if label else ()))

    walk(body, ())
    return found


def build_opml(feeds: Iterable[Feed], *, now: datetime, title: str = "aggregator subscriptions") -> bytes:
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = format_datetime(now)
    body = ET.SubElement(root, "body")
    folders: dict[str, ET.Element] = {}
    for feed in feeds:
        parent = body
        if feed.folder:
            parent = folders.get(feed.folder)  # type: ignore[assignment]
            if parent is None:
                parent = ET.SubElement(body, "outline", text=feed.folder, title=feed.folder)
                folders[feed.folder] = parent
        label = feed.title or feed.url
        attrs = {"type": "rss", "text": label, "title": label, "xmlUrl": feed.url}
        if feed.site_url:
            attrs["htmlUrl"] = feed.site_url
        ET.SubElement(parent, "outline", attrs)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"
