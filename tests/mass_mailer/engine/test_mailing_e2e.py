"""A mailing end to end: CSV contacts, target group, template, sender identity, scheduled 3 s
ahead, through Apache Kafka into an aiosmtpd sink; unsubscribe, bounces, GDPR."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import dkim
import pytest

from shared.contracts import DeliveryEvent, DeliveryStatus
from tests.integration.harness import AUTH, eventually, produce, running
from tests.mass_mailer.engine.conftest import (
    SURVEY_URL,
    contacts_csv,
    create_identity,
    create_mailing,
    create_template,
    deliveries,
    import_group,
    mailing,
    wait_status,
)
from tests.mass_mailer.engine.wiring import create_app

pytestmark = pytest.mark.timeout(240)

EXTRA = (
    "optout,optout@example.org,Otto,,de,yes,\r\n"
    "bounced,bounced@example.org,Berta,,de,no,\r\n"
    "noemail,,Nina,,de,no,\r\n"
    "broken,not an address,X,,,,\r\n"
)


async def test_scheduled_mailing_reaches_every_eligible_contact_once(
    engine_settings, kafka_broker, smtp_sink
):
    settings = engine_settings
    async with running(create_app, settings) as client:
        records = await create_identity(client, smtp_sink)
        template_id = await create_template(client, settings)
        report = await import_group(client, contacts_csv(30, extra_rows=EXTRA))
        assert (report["created"], report["rejected"]) == (33, 1)
        assert report["errors"][0]["row"] == 35 and "not valid" in report["errors"][0]["error"]
        assert report["members"]["refused"] == ["noemail", "broken"]

        # A hard bounce arrives from the scanner before the mailing: the contact is suppressed.
        bounce = DeliveryEvent(
            correlation_id="scanner-1", recipient="bounced@example.org", status=DeliveryStatus.BOUNCED,
            source="mail_scanner", reason="hard: 550 5.1.1 user unknown", smtp_code=550,
        )  # fmt: skip
        await produce(
            kafka_broker.bootstrap, settings.topic("mail.delivery-events"), [bounce.model_dump(mode="json")]
        )

        async def bounced() -> bool:
            return (await client.get("/v1/contacts/bounced", headers=AUTH)).json()["bounced"]

        await eventually(bounced)

        mailing_id = await create_mailing(client, template_id, delay_s=3.0)
        # Scheduled: read-only.
        edit = await client.patch(f"/v1/mailings/{mailing_id}", headers=AUTH, json={"name": "other"})
        assert edit.status_code == 409
        done = await wait_status(client, mailing_id, "completed")
        rows = await deliveries(client, mailing_id)

        messages = smtp_sink.accepted
        recipients = sorted(r for m in messages for r in m.rcpt_tos)
        assert recipients == sorted(f"r{i:05d}@example.org" for i in range(30))  # exactly one each
        assert done["progress"]["sent"] == 30 and done["progress"]["failed"] == 2
        not_sent = {r["contact_id"]: r["last_reply"] for r in rows if r["status"] == "failed"}
        assert not_sent == {"optout": "not sent: email_opt_out", "bounced": "not sent: bounced"}

        txt = {f"{r['name']}.".encode(): r["value"].encode() for r in records}
        dns = lambda name, timeout=5: txt.get(name, b"")  # noqa: E731
        for message in messages:
            assert dkim.DKIM(message.data).verify(dnsfunc=dns)
            parsed = message.message
            number = int(message.rcpt_tos[0][1:6])
            assert str(parsed["Subject"]) == f"News für Name{number}"
            body = parsed.get_body(("html",)).get_content()
            assert f"Hallo Name{number}" in body and f"Stadt{number}" in body
            assert str(parsed["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
            unsubscribe = str(parsed["List-Unsubscribe"])
            assert re.fullmatch(
                r"<https://mailer\.example\.com/p/u/[^>]+>, <mailto:unsubscribe@mail\.example\.com\?[^>]+>",
                unsubscribe,
            )
            assert re.fullmatch(
                rf"bounce\+{mailing_id}\.\d+\.[0-9a-f]{{16}}@mail\.example\.com", message.mail_from
            )
            signed = re.search(r"h=([^;]+);", str(parsed["DKIM-Signature"]).replace(" ", ""))[1].split(":")
            assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= set(signed)

        # The survey button goes through our signed, time-limited link to the mailing's survey.
        first = messages[0]
        html_body = first.message.get_body(("html",)).get_content()
        survey = re.search(r'href="https://mailer\.example\.com/p(/m/survey/[^"]+)"', html_body)
        assert survey is not None, "no survey link in the message"
        redirect = await client.get(survey[1])
        assert redirect.status_code == 303 and redirect.headers["location"] == SURVEY_URL

        # One-click unsubscribe: POST to the header's URL (RFC 8058).
        url = re.search(r"<(https://[^>]+)>", str(first.message["List-Unsubscribe"]))[1]
        path = urlsplit(url).path.removeprefix("/p")
        page = await client.get(path)
        assert page.status_code == 200 and "<form method='post'" in page.text
        reply = await client.post(path, content=b"List-Unsubscribe=One-Click",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert reply.status_code == 200
        contact_id = f"c{int(first.rcpt_tos[0][1:6]):05d}"
        contact = (await client.get(f"/v1/contacts/{contact_id}", headers=AUTH)).json()
        assert contact["unsubscribed"] is True
        again = await client.post(
            "/v1/target-groups/g1/members", headers=AUTH, json={"contact_ids": [contact_id]}
        )
        assert again.json()["refused"] == [contact_id]  # an unsubscribed contact is never re-added
        forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
        assert (await client.post(forged)).status_code == 404

        # Open pixel and the final statuses.
        pixel = re.search(
            r'src="https://mailer\.example\.com/p(/m/open/[^"]+)"',
            messages[1].message.get_body(("html",)).get_content(),
        )
        assert (await client.get(pixel[1])).status_code == 200
        after = {r["contact_id"]: r["status"] for r in await deliveries(client, mailing_id)}
        assert after[contact_id] == "unsubscribed"
        assert after[f"c{int(messages[1].rcpt_tos[0][1:6]):05d}"] == "opened"

        # GDPR: export, then erase (statistics stay, anonymised).
        export = (await client.get(f"/v1/contacts/{contact_id}/export", headers=AUTH)).json()
        assert (
            export["contact"]["email"] == first.rcpt_tos[0]
            and export["deliveries"][0]["status"] == "unsubscribed"
        )
        assert (await client.delete(f"/v1/contacts/{contact_id}", headers=AUTH)).status_code == 204
        assert (await client.get(f"/v1/contacts/{contact_id}/export", headers=AUTH)).status_code == 404
        anonymised = [
            r for r in await deliveries(client, mailing_id) if r["contact_id"].startswith("erased-")
        ]
        assert len(anonymised) == 1 and anonymised[0]["email"] is None
        assert (await mailing(client, mailing_id))["progress"]["total"] == 32
