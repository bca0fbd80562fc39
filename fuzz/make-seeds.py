#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from the project's fixtures and
from certificates and tokens made here with openssl (FUZZING.md).

Run from the repository root: python3 fuzz/make-seeds.py
It also writes tests/fixtures/fuzz/sts-cert.der, the certificate the jwt and
token_reply targets verify signatures against; the key that signed the seed
tokens is thrown away.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
# The instant the targets run at (sonde::fuzzing::NOW): 2026-11-29T00:00:00Z.
NOW = 1_795_910_400


def target(name):
    path = os.path.join(CORPUS, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def put(directory, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(key, header, claims, cwd):
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    with open(os.path.join(cwd, "input"), "w") as f:
        f.write(signing_input)
    openssl("dgst", "-sha256", "-sign", key, "-out", "sig", "input", cwd=cwd)
    return signing_input + "." + b64url(read(cwd, "sig"))


def main():
    work = tempfile.mkdtemp()
    sep = b"\n#--\n"

    # Certificates: RSA and EC, PEM and DER, a bundle, PKCS#12 with and without a password.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rsa.key", "-out", "rsa.pem",
            "-days", "400", "-subj", "/CN=Microsoft Exchange Server Auth Certificate", cwd=work)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ec.key", "-out", "ec.pem", "-days", "30", "-subj", "/CN=mail.contoso.com", cwd=work)
    openssl("x509", "-in", "rsa.pem", "-outform", "DER", "-out", "rsa.der", cwd=work)
    openssl("pkcs12", "-export", "-inkey", "rsa.key", "-in", "rsa.pem", "-out", "rsa.pfx",
            "-passout", "pass:fuzz", cwd=work)
    openssl("pkcs12", "-export", "-inkey", "ec.key", "-in", "ec.pem", "-out", "nopass.pfx",
            "-passout", "pass:", cwd=work)
    rsa_pem, ec_pem = read(work, "rsa.pem"), read(work, "ec.pem")
    rsa_key = read(work, "rsa.key")

    # certificate_file: flags byte (bits 0-2 extension pem/cer/der/pfx/p12,
    # bit 3 exchange-auth, bit 4 password file), then the file.
    d = target("certificate_file")
    put(d, "rsa.pem", b"\x00" + rsa_pem)
    put(d, "ec-auth.pem", b"\x08" + ec_pem)
    put(d, "rsa.der", b"\x02" + read(work, "rsa.der"))
    put(d, "rsa-der-as.cer", b"\x01" + read(work, "rsa.der"))
    put(d, "bundle.pem", b"\x00" + rsa_pem + rsa_key + ec_pem)
    put(d, "rsa-password.pfx", b"\x13" + read(work, "rsa.pfx"))
    put(d, "nopass.p12", b"\x04" + read(work, "nopass.pfx"))
    put(d, "examples-oauth.cer", b"\x01" + read(ROOT, "examples", "certs", "oauth-demo.cer"))

    # credential: key, separator, certificate (the certificate also read as PKCS#12).
    d = target("credential")
    put(d, "rsa-pem", rsa_key + sep + rsa_pem)
    put(d, "rsa-pkcs12", read(work, "rsa.pfx"))
    put(d, "ec-pem", read(work, "ec.key") + sep + ec_pem)
    put(d, "rsa-der", rsa_key + sep + read(work, "rsa.der"))

    # metadata: the recorded documents.
    d = target("metadata")
    exchange = os.path.join(FIXTURES, "exchange")
    for name in sorted(os.listdir(exchange)):
        if name.endswith(".json"):
            put(d, name, read(exchange, name))

    # The fixture STS: its certificate verifies the seed tokens.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "sts.key", "-out", "sts.pem",
            "-days", "3650", "-subj", "/CN=sonde fuzz STS", cwd=work)
    os.makedirs(os.path.join(FIXTURES, "fuzz"), exist_ok=True)
    openssl("x509", "-in", "sts.pem", "-outform", "DER", "-out",
            os.path.join(FIXTURES, "fuzz", "sts-cert.der"), cwd=work)
    acs_claims = {
        "aud": f"00000002-0000-0ff1-ce00-000000000000/mail.contoso.com@{TENANT}",
        "iss": f"00000001-0000-0000-c000-000000000000@{TENANT}",
        "nbf": NOW - 60, "exp": NOW + 3600, "appid": "6f2a4c31-8d3e-4b7a-9c15-2e0d8f4b1a77",
    }
    entra_claims = dict(acs_claims, iss=f"https://sts.windows.net/{TENANT}/", nbf=str(NOW - 60),
                        tid=TENANT)
    header = {"typ": "JWT", "alg": "RS256", "x5t": "T8QoTVnvGJ8xxOTZQc0yEk1IdXk"}
    acs_token = jwt("sts.key", header, acs_claims, work)
    entra_token = jwt("sts.key", header, entra_claims, work)
    expired = jwt("sts.key", header, dict(acs_claims, exp=NOW - 10), work)

    d = target("jwt")
    put(d, "acs", acs_token)
    put(d, "entra", entra_token)
    put(d, "expired", expired)
    put(d, "none-alg", b64url(b'{"alg":"none"}') + "." + b64url(json.dumps(acs_claims).encode()) + ".")

    d = target("token_reply")
    put(d, "acs-answer", json.dumps({
        "token_type": "Bearer", "access_token": acs_token, "expires_in": "3599",
        "not_before": str(NOW - 60), "expires_on": str(NOW + 3600),
        "resource": acs_claims["aud"]}))
    put(d, "entra-answer", json.dumps({
        "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": entra_token}))
    put(d, "expired-answer", json.dumps({"token_type": "Bearer", "access_token": expired}))
    put(d, "acs-error", json.dumps({
        "error": "invalid_client",
        "error_description": "ACS50012: Authentication failed.\r\nTrace ID: 5f2c\r\nTimestamp: 2026-11-29 00:00:00Z"}))
    put(d, "aad-error", json.dumps({
        "error": "invalid_client",
        "error_description": "AADSTS700027: Client assertion failed signature validation.",
        "error_codes": [700027], "trace_id": "x"}))
    put(d, "html", "<html><body>Service Unavailable</body></html>")

    # graph_reply: status selector (0 -> 200, 2 -> 401, 3 -> 403, 4 -> 404), then the body.
    d = target("graph_reply")
    graph = os.path.join(FIXTURES, "graph")
    for name in sorted(os.listdir(graph)):
        status = {"error-401.json": 2, "error-403.json": 3, "error-404.json": 4}.get(name, 0)
        put(d, name, bytes([status]) + read(graph, name))

    d = target("www_authenticate")
    put(d, "push-401", read(exchange, "push-401-www-authenticate.txt"))
    put(d, "realm", f'Bearer realm="{TENANT}", client_id="00000002-0000-0ff1-ce00-000000000000", '
                    'trusted_issuers="00000001-0000-0000-c000-000000000000@*"')
    put(d, "escaped", 'Bearer error="invalid_token", error_description="the \\"token\\" expired"')
    put(d, "basic", 'Basic realm="mail"')

    d = target("retry_after")
    for i, v in enumerate(["120", "0", "Wed, 21 Oct 2015 07:28:00 GMT",
                           "Sun, 29 Nov 2026 00:01:00 GMT", "18446744073709551616", "-5"]):
        put(d, f"v{i}", v)

    d = target("smtp_reply")
    put(d, "starttls", "220 mail.contoso.com ESMTP\r\n250-mail.contoso.com\r\n250-SIZE 35882577\r\n"
                       "250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n")
    put(d, "no-starttls", "220 mx ESMTP\r\n250-mx\r\n250 8BITMIME\r\n")
    put(d, "refused", "220 mx\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n")
    put(d, "busy", "421 4.3.2 Service not available\r\n")
    put(d, "injected", "220 mx\r\n250 STARTTLS\r\n220 go\r\n250 injected\r\n")

    # config: the example, the packaged file and the bad fixtures; a few with
    # includes (after `#--` lines) and ${VAR}.
    d = target("config")
    put(d, "example", read(ROOT, "examples", "sonde.toml"))
    put(d, "packaged", read(ROOT, "packaging", "sonde.toml"))
    bad = os.path.join(FIXTURES, "config", "bad")
    for name in ["bad-cron", "bad-duration", "dependency-cycle", "duration-too-long", "many-errors",
                 "maintenance-bad-time", "numeric-weekday", "remind-max-below-every", "syntax",
                 "unset-variable", "token-invalid", "http-invalid", "channel-invalid",
                 "telemetry-otlp-protocol"]:
        put(d, name, read(bad, name + ".toml"))
    put(d, "include", b'include = ["inc/*.toml"]\n' + sep + read(FIXTURES, "config", "inc", "web.toml")
        + sep + read(FIXTURES, "config", "inc-channel", "mail.toml"))
    put(d, "env", '[[probe]]\nname = "${NAME}"\nkind = "http"\nurl = "${URL}"\nevery = "${EVERY}"\n'
                  'headers = { X = "${QUOTE}" }\n# ${UNSET} in a comment\n'
                  '[[probe]]\nname = "b${EMPTY:-x}"\nkind = "http"\nurl = "${MISSING:-https://b/}"\n'
                  'every = "1m"\ndepends_on = ["web"]\n')
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
