"""Fill an IMAP folder with a workload's messages (one APPEND per message, in order)."""

from __future__ import annotations

from collections.abc import Sequence

from imapclient import IMAPClient


def fill_folder(
    host: str, port: int, user: str, password: str, messages: Sequence[bytes], folder: str = "INBOX"
) -> int:
    """APPEND ``messages`` in order (so UIDs follow the list); return the folder's message count."""
    with IMAPClient(host, port=port, ssl=False, timeout=30) as client:
        client.login(user, password)
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for data in messages:
            client.append(folder, data)
        return int(client.select_folder(folder, readonly=True)[b"EXISTS"])
