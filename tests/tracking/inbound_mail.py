"""Real-shaped inbound RFC 822 messages: a person's reply, out-of-office answers and bounce DSNs.

Headers follow what Gmail, Outlook/Exchange and Google's mailer-daemon actually send.
"""

from __future__ import annotations

DATE = "Wed, 01 Apr 2026 10:00:00 +0000"


def person_reply(*, sender: str, to: str, original_id: str, subject: str = "Re: Quick question") -> bytes:
    return f"""\
Return-Path: <{sender}>
Received: from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41])
MIME-Version: 1.0
Date: {DATE}
Message-ID: <CAKx=reply-{abs(hash(original_id)) % 10**8}@mail.gmail.com>
In-Reply-To: {original_id}
References: {original_id}
Subject: {subject}
From: Pat Prospect <{sender}>
To: {to}
Content-Type: multipart/alternative; boundary="000000000000b1"

--000000000000b1
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

Hi Sam,

Sounds interesting =E2=80=94 can we talk Thursday?

Pat

On Tue, Mar 31, 2026 at 9:00 AM Sam Sender <{to}> wrote:
> Quick question about your pipeline.

--000000000000b1
Content-Type: text/html; charset="UTF-8"

<div dir=3D"ltr">Hi Sam,<br>Sounds interesting =E2=80=94 can we talk Thursday?<br>Pat</div>

--000000000000b1--
""".replace("\n", "\r\n").encode()


def gmail_vacation(*, sender: str, to: str, original_id: str) -> bytes:
    # Gmail's vacation responder: RFC 3834 Auto-Submitted, subject is "Re: <original>" unless set.
    return f"""\
MIME-Version: 1.0
Date: {DATE}
Message-ID: <CAKx=vacation-1@mail.gmail.com>
In-Reply-To: {original_id}
References: {original_id}
Subject: Re: Quick question
From: Pat Prospect <{sender}>
To: {to}
Auto-Submitted: auto-replied
Precedence: bulk
Content-Type: text/plain; charset="UTF-8"

I'm away until April 14 with limited access to email.
""".replace("\n", "\r\n").encode()


def outlook_automatic_reply(*, sender: str, to: str, original_id: str, auto_submitted: bool) -> bytes:
    # Exchange Online: "Automatic reply:" subject, X-Auto-Response-Suppress; Auto-Submitted depends on the tenant.
    auto = "Auto-Submitted: auto-generated\n" if auto_submitted else ""
    return f"""\
Received: from AM0PR02MB1234.eurprd02.prod.outlook.com
From: Pat Prospect <{sender}>
To: Sam Sender <{to}>
Subject: Automatic reply: Quick question
Thread-Topic: Quick question
Thread-Index: AQHaXyZ1
Date: {DATE}
Message-ID: <AM0PR02MB1234ABCD@AM0PR02MB1234.eurprd02.prod.outlook.com>
In-Reply-To: {original_id}
References: {original_id}
X-MS-Has-Attach:
X-Auto-Response-Suppress: All
X-MS-Exchange-Inbox-Rules-Loop: {sender}
{auto}Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0

I am out of the office until Monday. For urgent matters contact office@prospect.test.
""".replace("\n", "\r\n").encode()


def bounce_dsn(*, mailbox: str, recipient: str, original_id: str, status: str) -> bytes:
    # Google's mailer-daemon: RFC 3464 multipart/report with the original's headers attached.
    action = "failed" if status.startswith("5") else "delayed"
    return f"""\
MIME-Version: 1.0
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {mailbox}
Auto-Submitted: auto-replied
Subject: {"Delivery Status Notification (Failure)" if action == "failed" else "Delivery Status Notification (Delay)"}
Message-ID: <dsn-{status}-{abs(hash(original_id)) % 10**8}@mx.google.com>
Date: {DATE}
References: {original_id}
In-Reply-To: {original_id}
Content-Type: multipart/report; boundary="00000000000dsn"; report-type=delivery-status

--00000000000dsn
Content-Type: text/plain; charset="UTF-8"

** {"Address not found" if action == "failed" else "Message delayed"} **

Your message to {recipient} {"couldn't be delivered" if action == "failed" else "has been delayed"}.

--00000000000dsn
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; sam@company.test
Arrival-Date: {DATE}

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.prospect.test. (192.0.2.25, the server for the domain prospect.test.)
Diagnostic-Code: smtp; {status[0]}50 {status} The email account that you tried to reach does not exist.
Last-Attempt-Date: {DATE}

--00000000000dsn
Content-Type: text/rfc822-headers

From: Sam Sender <{mailbox}>
To: {recipient}
Subject: Quick question
Message-ID: {original_id}
Date: {DATE}

--00000000000dsn--
""".replace("\n", "\r\n").encode()
