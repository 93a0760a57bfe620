"""A template version ready for per-recipient rendering: MJML already ran at save time; here the
subject, HTML and text templates are compiled once (jinja2 sandbox) and cached per version."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template
from sqlmodel import Session

from services.mass_mailer.templates.links import link_values
from services.mass_mailer.templates.merge import compile_merge

RESERVED_NAMES = frozenset({"contact", "links"})
_HEADER_BREAKS = re.compile(r"[\r\n\x00\x0b\x0c\u2028\u2029]+")
_INDENTATION = re.compile(r"^[ \t]+", re.MULTILINE)
_WHITESPACE_KEPT = re.compile(r"<pre|<textarea|<plaintext|<xmp|white-space\s*:\s*(?:pre|break-spaces)", re.I)


def without_indentation(html: str) -> str:
    """MJML's output with each line's leading blanks removed: a newline and the blanks after it
    render as one space, so the mail looks the same and is ~12% smaller (a DKIM signer's relaxed
    body canonicalisation also has no runs of blanks to collapse then). HTML that keeps
    whitespace somewhere (``<pre>``, ``white-space: pre``) is left as it is."""
    if _WHITESPACE_KEPT.search(html):
        return html
    return _INDENTATION.sub("", html)


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    html: str
    text: str


def _contact_view(contact: Mapping[str, Any]) -> dict[str, Any]:
    """Only the documented fields; empty ones are left out, so ``default(...)`` applies."""
    view: dict[str, Any] = {
        key: contact[key]
        for key in ("first_name", "last_name", "email", "language")
        if contact.get(key) not in (None, "")
    }
    custom = contact.get("custom")
    view["custom"] = custom if isinstance(custom, Mapping) else {}
    return view


class CompiledTemplate:
    """Immutable and thread-safe: rendering only reads the compiled jinja templates."""

    def __init__(
        self,
        *,
        template_id: int,
        version_id: int,
        subject: str,
        html: str,
        text: str,
        sender_identity: str | None = None,
        survey_valid_days: int | None = None,
    ) -> None:
        self.template_id = template_id
        self.version_id = version_id
        self.sender_identity = sender_identity
        self.survey_valid_days = survey_valid_days
        self._subject: Template = compile_merge(subject, html=False, where="subject")
        self._html: Template = compile_merge(without_indentation(html), html=True, where="body")
        self._text: Template = compile_merge(text, html=False, where="text part")

    def render(
        self,
        *,
        contact: Mapping[str, Any],
        links: Mapping[str, str],
        extra: Mapping[str, Any] | None = None,
    ) -> RenderedMail:
        """Subject, HTML and text for one recipient. Values are escaped in the HTML; the subject
        is one line (line breaks from contact data become spaces)."""
        context: dict[str, Any] = {}
        if extra:
            clash = RESERVED_NAMES.intersection(extra)
            if clash:
                raise ValueError(f"extra must not redefine {sorted(clash)}")
            context.update(extra)
        context["contact"] = _contact_view(contact)
        context["links"] = link_values(dict(links))
        subject = _HEADER_BREAKS.sub(" ", self._subject.render(context)).strip()
        return RenderedMail(subject=subject, html=self._html.render(context), text=self._text.render(context))


class _Cache:
    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, int], CompiledTemplate] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, database: str, version_id: int) -> CompiledTemplate | None:
        with self.lock:
            found = self.items.get((database, version_id))
            if found is not None:
                self.items.move_to_end((database, version_id))
            return found

    def put(self, database: str, compiled: CompiledTemplate) -> CompiledTemplate:
        """Versions are immutable, so an entry never goes stale; keyed per database."""
        with self.lock:
            existing = self.items.get((database, compiled.version_id))
            if existing is not None:
                return existing
            self.items[(database, compiled.version_id)] = compiled
            while len(self.items) > self.size:
                self.items.popitem(last=False)
            return compiled


CACHE = _Cache()


def compiled_version(session: Session, version_id: int) -> CompiledTemplate:
    """See store.compiled_version (re-exported here for callers of the interface)."""
    from services.mass_mailer.templates import store

    return store.compiled_version(session, version_id)


def current_version(session: Session, template_id: int) -> CompiledTemplate | None:
    """See store.current_version."""
    from services.mass_mailer.templates import store

    return store.current_version(session, template_id)
