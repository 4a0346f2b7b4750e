"""Local alert receivers for trying the monitor by hand and for ``make chaos``: an SMTP server
(aiosmtpd) and a webhook receiver on 127.0.0.1 that log each message with the time it arrived.

    .venv/bin/python bench/alert_receivers.py --smtp-port 19025 --webhook-port 19080

then run the platform with ``BTC_ALERT_EMAIL_TO=ops@example.org BTC_ALERT_SMTP_PORT=19025
BTC_ALERT_SMTP_SECURITY=none BTC_ALERT_WEBHOOK_URL=http://127.0.0.1:19080/hook``.
"""

from __future__ import annotations

import argparse
import email
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("alert_receivers")


class Mailbox:
    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        subject = str(email.message_from_bytes(envelope.content)["Subject"]).replace("\n", "")
        log.info("e-mail to %s: %s", ",".join(envelope.rcpt_tos), subject)
        return "250 OK"


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's hook name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        log.info("webhook %s: %s", self.path, body.get("text", "").splitlines()[0])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def main() -> int:
    from aiosmtpd.controller import Controller

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--webhook-port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=args.smtp_port)
    smtp.start()
    server = ThreadingHTTPServer(("127.0.0.1", args.webhook_port), Hook)
    log.info("SMTP on 127.0.0.1:%d, webhook on http://127.0.0.1:%d/hook", args.smtp_port, args.webhook_port)
    try:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        smtp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
