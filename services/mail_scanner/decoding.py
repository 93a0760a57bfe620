"""Charset and header repair for real-world mail.

Mail lies about its charsets: parts are labelled ISO-8859-1 but carry UTF-8, carry no label
at all, use aliases Python does not know ("unicode-1-1-utf-7", "ks_c_5601-1987"), or put raw
8-bit bytes into headers. These helpers always return text and never raise.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re
from email.utils import getaddresses
from functools import lru_cache

# Names seen in the wild mapped to the codec that really decodes them (supersets preferred:
# GB2312 senders routinely use GBK/GB18030 characters, Big5 senders HKSCS, and so on).
_ALIASES = {
    "unicode-1-1-utf-7": "utf-7",
    "unicode-2-0-utf-7": "utf-7",
    "x-unicode20utf7": "utf-7",
    "utf7": "utf-7",
    "utf8": "utf-8",
    "utf-8lite": "utf-8",
    "x-utf-8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "chinese": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "x-user-defined": "cp1252",
    "x-unknown": "",
    "unknown": "",
    "unknown-8bit": "",
    "default": "",
    "charset": "",
}

# Codecs whose ASCII-only bytes still need the codec (escape sequences, UTF-7 shifts).
_SEVEN_BIT_CODECS = ("utf-7", "utf-16", "utf-32", "iso2022", "hz")
# Labels whose bytes are tried as UTF-8 first (UTF-8 is never valid by accident in them).
_UTF8_FIRST = {"", "ascii", "cp1252", "iso8859-1", "latin-1", "iso8859-15"}


def codec_for(charset: str | None) -> str:
    """The Python codec name for a declared charset, or "" when unknown or absent."""
    if not charset:
        return ""
    name = charset.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    if not name:
        return ""
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return ""


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode with the declared charset, repairing the common lies; never raises.

    Order: UTF-8 when the label is absent/ASCII/Latin and the bytes are valid UTF-8 (the
    usual mislabelling), then the declared charset, then UTF-8, then cp1252, then Latin-1.
    """
    codec = codec_for(charset)
    if data.isascii() and not codec.startswith(_SEVEN_BIT_CODECS):
        return data.decode("ascii")
    candidates: list[str] = []
    if codec in _UTF8_FIRST:
        candidates.append("utf-8")
    if codec:
        candidates.append(codec)
    candidates += ["utf-8", "cp1252"]
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    if codec:
        try:
            return data.decode(codec, errors="replace")
        except LookupError:
            pass
    return data.decode("latin-1")


# Raw 8-bit header bytes are decoded as UTF-8, else in the charset of the body (the sender's
# locale), else in a close relative of it (Japanese mail labels ISO-2022-JP but sends Shift_JIS).
_RELATIVES = {
    "iso2022_jp": ("cp932", "euc_jp"),
    "euc_jp": ("cp932",),
    "cp932": ("euc_jp",),
    "iso2022_kr": ("cp949",),
}


def repair_surrogates(value: str, hint: str | None = None) -> str:
    """Headers parsed from bytes keep raw 8-bit bytes as surrogate escapes: decode them."""
    if not _SURROGATE.search(value):
        return value
    raw = value.encode("utf-8", errors="surrogateescape")
    codec = codec_for(hint)
    for candidate in ("utf-8", codec, *_RELATIVES.get(codec, ())):
        if candidate:
            try:
                return raw.decode(candidate)
            except (UnicodeDecodeError, LookupError):
                continue
    return decode_bytes(raw, None)


_SURROGATE = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,40}?)\?([bBqQ])\?([^\r\n]*?)\?=")
_BETWEEN_WORDS = re.compile(r"^[ \t\r\n]+$")


def _word_bytes(encoding: str, payload: str) -> bytes:
    if encoding.lower() == "b":
        cleaned = re.sub(r"[^A-Za-z0-9+/]", "", payload)
        cleaned += "=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return payload.encode("ascii", errors="replace")
    return quopri.decodestring(payload.replace("_", " ").encode("ascii", errors="replace"), header=False)


def decode_header_value(value: str | None, hint: str | None = None) -> str:
    """Decode RFC 2047 encoded words (lenient), unfold, and repair raw 8-bit bytes.

    ``hint`` is the body's charset, used for raw 8-bit bytes in the header."""
    if not value:
        return ""
    value = str(value)
    if value.isascii() and "=?" not in value and "\n" not in value:
        return _CONTROL.sub("", value.rstrip())  # nothing to decode or unfold: the common case
    value = repair_surrogates(value, hint)
    value = re.sub(r"\r?\n([ \t])", r"\1", value).rstrip()
    out: list[str] = []
    pending: bytes = b""
    pending_charset = ""
    pos = 0
    last_was_word = False

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            out.append(decode_bytes(pending, pending_charset))
        pending, pending_charset = b"", ""

    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        data = _word_bytes(match.group(2), match.group(3))
        if gap and not (last_was_word and _BETWEEN_WORDS.match(gap)):
            flush()
            out.append(gap)
        # Adjacent words in the same charset are joined as bytes: senders split multi-byte
        # characters across words.
        if pending and codec_for(charset) != codec_for(pending_charset):
            flush()
        pending += data
        pending_charset = charset
        pos = match.end()
        last_was_word = True
    flush()
    out.append(value[pos:])
    text = "".join(out)
    return _CONTROL.sub("", text)


@lru_cache(maxsize=4096)
def address_pairs(raw: str) -> tuple[tuple[str, str], ...]:
    """``email.utils.getaddresses([raw])``, remembered: the same To/From values recur in every
    mail of an inbox, and the stdlib's strict address parsing is a large part of a parse."""
    return tuple(getaddresses([raw]))
