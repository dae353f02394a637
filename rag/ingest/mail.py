"""E-mail (.eml, Outlook .msg): the subject as title, sender, recipients and date as metadata and
at the top of the text, the body (plain text, or HTML read as the HTML loader reads it), and
each attachment handed back to be read as a document of its own (loaders.py).

Inline parts a mail client shows inside the body (a signature's logo, referenced by Content-ID)
are not attachments a person would search for, and are left out.
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import quopri
import re
from datetime import datetime
from typing import Any

from rag.config import IngestSettings
from rag.errors import IngestError
from rag.ingest.html import parse_html
from rag.ingest.parsed import Parsed
from rag.ingest.text import normalize_whitespace
from rag.records import Section


def _header_lines(subject: str, sender: str, to: str, cc: str, date: str) -> str:
    fields = (("Subject", subject), ("From", sender), ("To", to), ("Cc", cc), ("Date", date))
    return "\n".join(f"{name}: {value}" for name, value in fields if value)


def _sections(headers: str, body: str, html: bytes | None, settings: IngestSettings) -> list[Section]:
    """The header lines as the first section, then the body's sections."""
    sections = [Section(text=headers)] if headers else []
    if html is not None:
        body_sections, _ = parse_html(html, settings)
        return sections + body_sections
    text = normalize_whitespace(body)
    return sections + ([Section(text=text)] if text else [])


def _metadata(sender: str, to: str, cc: str, date: datetime | None) -> dict[str, Any]:
    found: dict[str, Any] = {"from": sender, "to": to, "cc": cc}
    if date is not None:
        found["date"] = date.isoformat()
    return {k: v for k, v in found.items() if v}


def _one_line(value: Any) -> str:
    return " ".join(str(value or "").split())


def parse_eml(data: bytes, settings: IngestSettings) -> Parsed:
    message = email.message_from_bytes(data, policy=email.policy.default)
    if not message.keys():
        raise IngestError("not an e-mail (no headers); the file is corrupt or misnamed")
    subject, sender, to, cc = (_one_line(message.get(h, "")) for h in ("subject", "from", "to", "cc"))
    try:
        date = email.utils.parsedate_to_datetime(message["date"]) if message["date"] else None
    except (TypeError, ValueError):
        date = None
    body_part = message.get_body(preferencelist=("plain", "html"))
    body, html = "", None
    if body_part is not None:
        content = body_part.get_content()
        if body_part.get_content_subtype() == "html":
            html = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        else:
            body = content if isinstance(content, str) else ""
    attachments: list[tuple[str, bytes]] = []
    for part in message.iter_attachments():
        name = part.get_filename()
        if part.get_content_type() == "message/rfc822":
            payload = _attached_message(part)
            inner = email.message_from_bytes(payload, policy=email.policy.default)
            name = name or f"{_one_line(inner.get('subject', '')) or 'message'}.eml"
        else:
            if part.get_content_disposition() == "inline" and part["content-id"] and not name:
                continue  # a picture the body shows (a logo), not a file someone attached
            payload = part.get_payload(decode=True) or b""
            name = name or f"attachment{_extension(part.get_content_type())}"
        attachments.append((name, payload))
    shown_date = date.strftime("%Y-%m-%d %H:%M %z").strip() if date else _one_line(message.get("date", ""))
    sections = _sections(_header_lines(subject, sender, to, cc, shown_date), body, html, settings)
    if not (body.strip() or html or subject):
        sections = []  # addresses alone are nothing to find; the attachments still are
    return Parsed(sections, subject or None, _metadata(sender, to, cc, date), attachments)


def _attached_message(part: Any) -> bytes:
    """A forwarded message's bytes. RFC 2046 allows only 7bit, 8bit or binary for message/rfc822,
    but some clients encode it in base64 anyway, which the standard parser reads as no message."""
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding in ("base64", "quoted-printable"):
        raw = part.as_bytes()
        body = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[-1]
        return base64.b64decode(body) if encoding == "base64" else quopri.decodestring(body)
    inner = part.get_content()
    return inner.as_bytes() if hasattr(inner, "as_bytes") else bytes(inner)


def _extension(content_type: str) -> str:
    import mimetypes

    return mimetypes.guess_extension(content_type) or ""


def parse_msg(data: bytes, settings: IngestSettings) -> Parsed:
    import extract_msg
    from extract_msg.exceptions import ExMsgBaseException

    try:
        message = extract_msg.openMsg(data, delayAttachments=False)
    except (ExMsgBaseException, OSError, ValueError, TypeError) as exc:
        raise IngestError(f"not an Outlook .msg file, or a corrupt one ({type(exc).__name__}: {exc})") from None
    try:
        subject, sender, to, cc = (_one_line(getattr(message, a, "")) for a in ("subject", "sender", "to", "cc"))
        date = message.date if isinstance(message.date, datetime) else None
        html = message.htmlBody if not (message.body or "").strip() else None
        attachments: list[tuple[str, bytes]] = []
        for attachment in message.attachments:
            if getattr(attachment, "hidden", False):
                continue  # Outlook's own inline pictures
            payload = attachment.data
            name = attachment.longFilename or attachment.shortFilename or attachment.displayName or "attachment"
            if not isinstance(payload, (bytes, bytearray)):
                continue  # an attached Outlook item; its text is not a file's bytes
            attachments.append((str(name), bytes(payload)))
        shown_date = date.strftime("%Y-%m-%d %H:%M %z").strip() if date else ""
        sections = _sections(_header_lines(subject, sender, to, cc, shown_date), message.body or "", html, settings)
    finally:
        message.close()
    return Parsed(sections, subject or None, _metadata(sender, to, cc, date), attachments)
