"""Helpers for the scanner engine tests: IMAP folders, mail builders, account set-up."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import httpx
from cryptography.fernet import Fernet
from imapclient import IMAPClient

from tests.integration.harness import AUTH

MASTER_KEY = Fernet.generate_key().decode()
FAST = {
    "master_key": MASTER_KEY,
    "scanner_claim_interval_s": 0.2,
    "scanner_lease_s": 4.0,
    "scanner_poll_interval_s": 0.5,
    "mail_domain": "helpdesk.example.test",
    "default_sender": "support@helpdesk.example.test",
}


def imap(dovecot: Any, user: str = "alice") -> IMAPClient:
    client = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False, timeout=30)
    client.login(user, dovecot.users[user])
    return client


def make_folder(dovecot: Any, name: str) -> None:
    with imap(dovecot) as client:
        client.create_folder(name)


def append(dovecot: Any, folder: str, *messages: bytes) -> None:
    with imap(dovecot) as client:
        for raw in messages:
            client.append(folder, raw)


def mail(
    sender: str = "customer@example.org",
    subject: str = "Printer on fire",
    body: str = "Hello, my printer is on fire.\n",
    *,
    to: str = "support@helpdesk.example.test",
    cc: str | None = None,
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(idstring=uuid.uuid4().hex, domain="example.org")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def dsn(original_message_id: str, recipient: str, status: str = "5.1.1") -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        "To: support@helpdesk.example.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mx.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"\r\n'
        "\r\n"
        "--BOUND\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "Your message could not be delivered.\r\n"
        "--BOUND\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        "--BOUND\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        "From: support@helpdesk.example.test\r\n"
        f"To: {recipient}\r\n"
        "Subject: [TT1001] Your ticket\r\n"
        f"Message-ID: {original_message_id}\r\n\r\n"
        "--BOUND--\r\n"
    ).encode()


def account_body(dovecot: Any, folder: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name or f"acct-{uuid.uuid4().hex[:8]}",
        "host": dovecot.host,
        "port": dovecot.imap_port,
        "encryption": "none",
        "username": "alice",
        "password": dovecot.users["alice"],
        "folders": [folder],
        "scan_mode": "unread",
        **extra,
    }


async def add_account(client: httpx.AsyncClient, dovecot: Any, folder: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/accounts", json=account_body(dovecot, folder, **extra), headers=AUTH)
    assert response.status_code == 201, response.text
    account = response.json()
    response = await client.patch(f"/v1/accounts/{account['id']}", json={"active": True}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


async def tickets(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/tickets", params={"limit": 1000, **params}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


async def ticket(client: httpx.AsyncClient, number: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tickets/{number}", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def flags(dovecot: Any, folder: str) -> dict[int, tuple[bytes, ...]]:
    with imap(dovecot) as client:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        return {uid: data[b"FLAGS"] for uid, data in client.fetch(uids, ["FLAGS"]).items()} if uids else {}


def wait_until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
