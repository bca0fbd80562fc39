"""An SMTP server for sonde's email channel tests: Debian's aiosmtpd, run by
/usr/bin/python3 (python3-aiosmtpd installs for it only).

    /usr/bin/python3 smtp_server.py --mode starttls|tls --cert C --key K \
        --user U --password P --out DIR

Listens on 127.0.0.1, port chosen by the kernel, and prints `PORT <n>` once it
accepts connections. AUTH (PLAIN, LOGIN) accepts only U/P and is offered only
over TLS; mail is accepted only after AUTH. Each message is written to DIR as
`<n>.json` ({"mail_from", "rcpt_tos", "data"}), atomically. Exits when its
standard input closes, so it never outlives the test that started it.
"""

import argparse
import json
import logging
import os
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class PortZeroController(Controller):
    """Controller bound to port 0: learns the real port before it checks it."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        # handled=False makes aiosmtpd answer a failure with 535 (with the
        # default, handled=True, it answers nothing and the client waits).
        return AuthResult(success=ok, handled=False)


class Saver:
    def __init__(self, out):
        self.out = out
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        data = envelope.content
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": data,
        }
        tmp = os.path.join(self.out, f".{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, f"{n}.json"))
        return "250 Message accepted for delivery"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["starttls", "tls"], required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    # aiosmtpd logs notes about its own settings and deprecations; only errors
    # concern the test.
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)

    params = dict(
        hostname="127.0.0.1",
        port=0,
        server_hostname="sonde-test-smtp",
        authenticator=Authenticator(args.user, args.password),
        auth_required=True,
        auth_require_tls=True,
    )
    if args.mode == "tls":
        params["ssl_context"] = context
        # aiosmtpd counts only STARTTLS as TLS; here the whole connection is,
        # so its warning about AUTH without TLS does not apply.
        params["auth_require_tls"] = False
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    else:
        params["tls_context"] = context
        params["require_starttls"] = True

    controller = PortZeroController(Saver(args.out), **params)
    controller.start()
    print(f"PORT {controller.port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
