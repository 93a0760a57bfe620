# ruff: noqa: RUF001  (multilingual patterns contain look-alike letters on purpose)
"""Cut quoted text and signatures off a reply, keeping only what the sender wrote now.

Works on plain text (HTML bodies are converted first). The full body is always kept by the
caller; this only computes the visible reply.
"""

from __future__ import annotations

import re

_WROTE_WORDS = (
    r"wrote|writes|schrieb|schreibt|a écrit|a ecrit|écrit|escribió|escribio|ha scritto|scrisse|schreef"
    r"|skrev|skriver|escreveu|pisze|napisał\(a\)|napisał|napisala|napsal\(a\)|napsal|kirjoitti"
    r"|написал\(а\)|написал|написала|пишет|yazdı|írta|a scris|kirjutas|rašė|rakstīja|写道|寫道"
    r"|wrote\s+the\s+following"
)
# Matched against the last characters of a line only (cheap on long texts).
_WROTE_END = re.compile(r"(?:" + _WROTE_WORDS + r")\s*[:：]?\s*$", re.IGNORECASE)
_STARTS_LIKE_HEADER = re.compile(
    r"^\s*((on|am|le|el|il|op|den|em|w dniu|dnia|dne|pe|ma|ti|tir|ke|to|pá|så|in data|le)\b|\d)",
    re.IGNORECASE,
)
_TIME_OF_DAY = re.compile(r"\d{1,2}[:.]\d{2}")
_YEAR = re.compile(r"(19|20)\d\d")
_ANGLE_COLON = re.compile(r"^\s*>\s*[:：]\s*$")
_HAS_DATE_OR_ADDRESS = re.compile(r"\d{1,4}|@|\bat\b", re.IGNORECASE)
_ADDRESS_COLON = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+\s*>?\)?\s*[:：]\s*$")
_ORIGINAL = re.compile(
    r"^\s*[-_=*\s]*\s*(original message|original-nachricht|ursprüngliche nachricht|message d'origine"
    r"|message original|mensaje original|messaggio originale|oorspronkelijk bericht"
    r"|oorspronkelijk e-mailbericht"
    r"|oprindelig (besked|meddelelse)|opprinnelig melding|ursprungligt meddelande|alkuperäinen viesti"
    r"|wiadomość oryginalna|oryginalna wiadomość|původní zpráva|mensagem original|исходное сообщение"
    r"|forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado|messaggio inoltrato"
    r"|doorgestuurd bericht|videresendt (besked|meddelelse)|vidarebefordrat meddelande|reply message)"
    r"\s*[-_=*\s]*\s*$",
    re.IGNORECASE,
)
_FORWARD_INTRO = re.compile(
    r"^\s*(begin forwarded message|anfang der weitergeleiteten nachricht|début du message réexpédié)\s*:\s*$",
    re.I,
)
_FROM_FIELD = re.compile(
    r"^\s*[*>]*\s*(from|von|de|da|van|fra|från|od|lähettäjä|от|kimden|feladó|afzender|remetente|expéditeur)"
    r"\s*[*]?\s*[:：]\s*[*]?\s*\S",
    re.IGNORECASE,
)
_OTHER_FIELD = re.compile(
    r"^\s*[*>]*\s*(sent|date|to|subject|cc|gesendet|datum|an|betreff|envoyé|envoye|date|à|a|objet"
    r"|inviato|data|oggetto|enviado|fecha|para|asunto|verzonden|aan|onderwerp|sendt|dato|til|emne"
    r"|skickat|till|ämne|wysłane|temat|do|lähetetty|päivämäärä|vastaanottaja|aihe|отправлено|кому|тема"
    r"|odesláno|komu|předmět|assunto|gönderildi|konu|kime|copie à|sujet|message du|envoyé le|cc|bcc|reply-to)"
    r"\s*[*]?\s*[:：]",
    re.IGNORECASE,
)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_SEPARATOR_LINE = re.compile(r"^\s*([-_=*~]\s*){3,}$")
_SIGNATURE_DELIMITER = re.compile(r"^(--|-- |__|—)\s*$")
_MOBILE_SIGNATURE = re.compile(
    r"^\s*(sent from (my )?[\w\s'.,-]{1,40}"
    r"|sent (from|with) (outlook|yahoo mail|mail for windows|gmail)[\w\s.]*"
    r"|get outlook for (ios|android)[^\n]*|envoyé (à partir )?de (mon|outlook|mail)[^\n]{0,60}"
    r"|envoyé depuis (mon )?[^\n]{1,40}|von meinem [^\n]{1,40} gesendet|gesendet von (meinem )?[^\n]{1,40}"
    r"|gesendet mit [^\n]{1,40}|inviato da[^\n]{1,40}|enviado desde (mi )?[^\n]{1,40}"
    r"|verzonden (met|vanaf|van) (mijn )?[^\n]{1,40}|skickat från (min )?[^\n]{1,40}"
    r"|sendt fra (min )?[^\n]{1,40}|wysłane z [^\n]{1,40}|отправлено с [^\n]{1,40})\s*$",
    re.IGNORECASE,
)
_MOBILE_WORDS = re.compile(
    r"iphone|ipad|android|blackberry|samsung|galaxy|mobile|phone|handy|outlook|mail|yahoo|gmail|device"
    r"|windows|huawei|xiaomi|pixel|tablet|smartphone|portable|téléphone|telefoon|telefon|ios",
    re.IGNORECASE,
)


_URL_SUFFIX = re.compile(r"\s*<https?://[^>\s]{1,200}>\s*$")
_SENT_FROM_MY = re.compile(r"^\s*sent from my( [\w-]{1,20}){1,5}\s*$", re.IGNORECASE)


def _is_mobile_signature(line: str) -> bool:
    line = _URL_SUFFIX.sub("", line)
    if len(line) >= 90:
        return False
    return bool(_SENT_FROM_MY.match(line)) or (
        bool(_MOBILE_SIGNATURE.match(line)) and bool(_MOBILE_WORDS.search(line))
    )


def _is_field(line: str) -> bool:
    return bool(_FROM_FIELD.match(line) or _OTHER_FIELD.match(line))


def _is_header_block(lines: list[str], index: int) -> bool:
    """Outlook-style "From: / Sent: / To: / Subject:" blocks (a value may wrap once)."""
    fields = [lines[index]]
    position = index + 1
    wrapped = False
    while position < len(lines) and position < index + 10:
        line = lines[position]
        if _is_field(line):
            fields.append(line)
        elif line.strip() and not wrapped and position + 1 < len(lines) and _is_field(lines[position + 1]):
            wrapped = True
        else:
            break
        position += 1
    return len(fields) >= 3 and any(_FROM_FIELD.match(x) for x in fields)


def _quote_header_at(lines: list[str], index: int) -> bool:
    line = lines[index].strip()
    if not line or line.startswith(">"):
        return False
    if _ORIGINAL.match(line) or _FORWARD_INTRO.match(line):
        return True
    if _UNDERSCORES.match(line):
        following = [x for x in lines[index + 1 : index + 3] if x.strip()]
        return bool(following) and bool(_FROM_FIELD.match(following[0]))
    if _FROM_FIELD.match(line) or _OTHER_FIELD.match(line):
        return _is_header_block(lines, index)
    # "On <date>, <name> wrote:" split over up to three lines.
    for span in (1, 2, 3):
        following = lines[index + 1 : index + span]
        if any(
            not x.strip() or (x.lstrip().startswith(">") and not _ANGLE_COLON.match(x)) for x in following
        ):
            break
        window = " ".join(x.strip() for x in lines[index : index + span])
        if len(window) > 500:
            break
        first = lines[index]
        if span > 1 and not (
            _STARTS_LIKE_HEADER.match(first) or _TIME_OF_DAY.search(first) or _YEAR.search(first)
        ):
            continue
        if _WROTE_END.search(window[-80:]) and _HAS_DATE_OR_ADDRESS.search(window):
            if _STARTS_LIKE_HEADER.match(window) or (_TIME_OF_DAY.search(window) and "@" in window):
                return True
        if window.endswith((":", "：")) and _ADDRESS_COLON.search(window[-200:]) and re.search(r"\d", window):
            return True
    return False


def _strip_signature(lines: list[str]) -> list[str]:
    for index, line in enumerate(lines):
        if _SIGNATURE_DELIMITER.match(line.rstrip("\r")) and index > 0 and len(lines) - index <= 30:
            return lines[:index]
        if (
            index > 0
            and _is_mobile_signature(line)
            and (index + 1 == len(lines) or not lines[index + 1].strip())
        ):
            return lines[:index]
    # Mobile signatures are only cut at the end of the reply.
    trimmed = list(lines)
    while trimmed and not trimmed[-1].strip():
        trimmed.pop()
    if trimmed and _is_mobile_signature(trimmed[-1]):
        trimmed.pop()
    return trimmed


def strip_reply(text: str, *, keep_signature: bool = False) -> str:
    """The new text of a reply: quote headers and everything after them, trailing '>' quotes
    and (unless ``keep_signature``) the signature removed. Returns the stripped full text when
    nothing is left."""
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = len(lines)
    for index in range(len(lines)):
        if _quote_header_at(lines, index):
            cut = index
            break
    reply = lines[:cut]
    while reply and (
        not reply[-1].strip() or reply[-1].lstrip().startswith(">") or _SEPARATOR_LINE.match(reply[-1])
    ):
        reply.pop()
    if not reply and cut < len(lines):
        # A bottom-posted reply: the new text sits below the quote.
        below = [x for x in lines[cut + 1 :] if not x.lstrip().startswith(">")]
        reply = below
    if not keep_signature:
        reply = _strip_signature(reply)
    result = "\n".join(reply).strip("\n")
    return result.strip() if result.strip() else text.strip()
