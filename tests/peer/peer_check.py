#!/usr/bin/env python3
"""Peer check: Google's own Python client (google-auth) against the emulator.

Starts the standalone `iap-emulator` binary, reads its `export` lines, and
drives it with google-auth exactly as a user would, unchanged except where
google-auth hard-codes a Google host (noted below). Then it calls the gated
echo app with the tokens google-auth obtained, verifies the signed header
(x-goog-iap-jwt-assertion) the app received as Google's IAP sample does
(id_token.verify_token with certs_url, JWK Set and PEM map), and expects
IAP's 401s for revoked, expired and wrong-audience tokens.

Usage: python3 tests/peer/peer_check.py [path/to/iap-emulator]
(default: $IAP_EMULATOR_BIN, else target/debug/iap-emulator, built if missing).

google-auth hard-codes some Google URLs that no file or environment
variable overrides; the script points these module constants at the
emulator: google.auth.iam._IAM_IDTOKEN_ENDPOINT (impersonated ID tokens)
and google.oauth2.credentials._GOOGLE_OAUTH2_TOKEN_ENDPOINT (authorized_user
files, whose token_uri google-auth ignores).
Needs: pip install google-auth requests PyJWT cryptography
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
EXPORTS = [
    "GCE_METADATA_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "IAP_EMULATOR_URL",
    "IAP_EMULATOR_APP_URL",
    "IAP_EMULATOR_AUDIENCE",
    "IAP_EMULATOR_JWKS_URL",
    "IAP_EMULATOR_IAP_JWKS_URL",
]


def emulator_binary():
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    if os.environ.get("IAP_EMULATOR_BIN"):
        return Path(os.environ["IAP_EMULATOR_BIN"])
    path = ROOT / "target" / "debug" / "iap-emulator"
    if not path.exists():
        subprocess.run(["cargo", "build", "-q", "-p", "iap-emulator"], cwd=ROOT, check=True)
    return path


def start_emulator(adc_dir):
    proc = subprocess.Popen(
        [str(emulator_binary()), "--listen", "127.0.0.1:0", "--adc-dir", adc_dir],
        stdout=subprocess.PIPE,
        text=True,
    )
    env = {}
    while not all(name in env for name in EXPORTS + ["IAP_EMULATOR_ADC_DIR"]):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"emulator exited early, code {proc.poll()}")
        name, _, value = line.strip().removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    return proc, env


class Emulator:
    """The emulator's /_emulator/ control API."""

    def __init__(self, url):
        self.url = url

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + "_emulator/" + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as resp:
            return json.load(resp)

    def counter(self, name, label):
        from urllib.parse import urlencode

        return self.call("GET", "counter?" + urlencode({"name": name, "label": label}))["value"]


def main():
    adc_dir = tempfile.mkdtemp(prefix="iap-peer-adc-")
    proc, env = start_emulator(adc_dir)
    # google-auth reads GCE_METADATA_HOST / GCE_METADATA_IP once, when its
    # metadata module is first imported: set them before importing it.
    os.environ.update(env)
    os.environ["GCE_METADATA_IP"] = env["GCE_METADATA_HOST"]
    try:
        failures = run_checks(env)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        shutil.rmtree(adc_dir, ignore_errors=True)
    if code != 0:
        print(f"not ok - emulator exited with {code} on SIGTERM")
        failures += 1
    print(f"# {failures} failure(s)")
    return 1 if failures else 0


def run_checks(env):
    import google.auth
    import google.auth.iam
    import requests
    from google.auth import exceptions, impersonated_credentials
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token, service_account

    emu = Emulator(env["IAP_EMULATOR_URL"])
    base = env["IAP_EMULATOR_URL"].rstrip("/")
    app_url = env["IAP_EMULATOR_APP_URL"]
    audience = env["IAP_EMULATOR_AUDIENCE"]
    jwks_url = env["IAP_EMULATOR_JWKS_URL"]
    key_file = env["GOOGLE_APPLICATION_CREDENTIALS"]
    request = Request()
    tokens = {}
    failures = 0

    def check(name, fn):
        nonlocal failures
        try:
            fn()
            print(f"ok - {name}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failures += 1
            print(f"not ok - {name}")
            traceback.print_exc(file=sys.stdout)

    def verify(token, aud=audience, certs_url=jwks_url):
        return id_token.verify_token(token, request, audience=aud, certs_url=certs_url)

    def call_app(token):
        return requests.get(app_url + "peer", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def expect_iap_401(token, body_part):
        resp = call_app(token)
        assert resp.status_code == 401, (resp.status_code, resp.text)
        assert resp.headers.get("X-Goog-IAP-Generated-Response") == "true", resp.headers
        assert body_part in resp.text, resp.text

    sa_email = json.load(open(key_file))["client_email"]

    # --- service_account.IDTokenCredentials: JWT-bearer at the key's token_uri.
    def service_account_id_token():
        before = emu.counter("id_tokens.jwt_bearer", audience)
        creds = service_account.IDTokenCredentials.from_service_account_file(
            key_file, target_audience=audience
        )
        creds.refresh(request)
        claims = verify(creds.token)
        assert claims["email"] == sa_email, claims
        assert claims["iss"] == "https://accounts.google.com", claims
        assert emu.counter("id_tokens.jwt_bearer", audience) == before + 1
        tokens["service_account"] = creds.token

    check("service_account.IDTokenCredentials gets an ID token that verifies against the JWKS", service_account_id_token)

    def verify_with_x509_certs():
        claims = verify(tokens["service_account"], certs_url=base + "/oauth2/v1/certs")
        assert claims["email"] == sa_email

    check("id_token.verify_token accepts the /oauth2/v1/certs X.509 map", verify_with_x509_certs)

    # --- google-auth retries a 503 from the token endpoint by itself.
    def retried_503_is_invisible():
        faults_before = emu.counter("faults", "token")
        emu.call("POST", "faults", {"endpoint": "token", "times": 1, "fault": {"kind": "status", "status": 503}})
        creds = service_account.IDTokenCredentials.from_service_account_file(
            key_file, target_audience=audience
        )
        creds.refresh(request)
        verify(creds.token)
        assert emu.counter("faults", "token") == faults_before + 1

    check("a single injected 503 at the token endpoint is retried by google-auth", retried_503_is_invisible)

    # --- id_token.fetch_id_token through the metadata server.
    def metadata_id_token():
        saved = os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS")
        try:
            token = id_token.fetch_id_token(request, audience)
        finally:
            os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = saved
        claims = verify(token)
        metadata_sa = emu.call("GET", "info")["metadata_service_account"]
        assert claims["email"] == metadata_sa, claims
        assert "google" in claims, "google-auth asks for format=full"
        tokens["metadata"] = token

    check("id_token.fetch_id_token via GCE_METADATA_HOST returns a format=full token", metadata_id_token)

    # --- impersonated_credentials.IDTokenCredentials via IAM Credentials.
    target = emu.call("POST", "service-accounts", {"name": "peer-target"})["client_email"]

    def impersonated(include_email=True):
        source = service_account.Credentials.from_service_account_file(key_file, scopes=[AUDIENCE_SCOPE])
        target_creds = impersonated_credentials.Credentials(
            source_credentials=source,
            target_principal=target,
            target_scopes=[AUDIENCE_SCOPE],
            iam_endpoint_override=f"{base}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
        )
        creds = impersonated_credentials.IDTokenCredentials(
            target_credentials=target_creds, target_audience=audience, include_email=include_email
        )
        creds.refresh(request)
        return creds.token

    # IDTokenCredentials has no endpoint override: it always formats
    # iam._IAM_IDTOKEN_ENDPOINT (https://iamcredentials.googleapis.com/...).
    google.auth.iam._IAM_IDTOKEN_ENDPOINT = base + "/v1/projects/-/serviceAccounts/{}:generateIdToken"

    def impersonation_denied_without_grant():
        try:
            impersonated()
        except exceptions.RefreshError as e:
            assert "iam.serviceAccounts.getOpenIdToken" in str(e), e
        else:
            raise AssertionError("impersonation succeeded without a grant")

    check("impersonated_credentials.IDTokenCredentials is refused without a Token Creator grant", impersonation_denied_without_grant)

    def impersonation_allowed():
        emu.call("POST", "impersonation", {"caller": sa_email, "target": target})
        token = impersonated()
        claims = verify(token)
        assert claims["email"] == target, claims
        tokens["impersonated"] = token

    check("impersonated_credentials.IDTokenCredentials gets the target's ID token", impersonation_allowed)

    # --- the gated echo app.
    def gate_accepts(kind):
        def run():
            token = tokens[kind]
            resp = call_app(token)
            assert resp.status_code == 200, (resp.status_code, resp.text)
            email = verify(token)["email"]
            headers = resp.json()["headers"]
            assert headers["x-goog-authenticated-user-email"] == f"accounts.google.com:{email}", headers
            assert "x-goog-iap-jwt-assertion" in headers

        return run

    for kind in ["service_account", "metadata", "impersonated"]:
        check(f"gated app answers 200 to the {kind} token", gate_accepts(kind))

    # --- IAP's signed header, verified as Google's own sample does
    # (id_token.verify_token with certs_url), against both key forms.
    default_app = next(a for a in emu.call("GET", "apps") if a["default"])
    assertion_audience = default_app["assertion_audience"]
    iap_keys = {
        "JWK Set": env["IAP_EMULATOR_IAP_JWKS_URL"],
        "PEM map": env["IAP_EMULATOR_IAP_JWKS_URL"].removesuffix("-jwk"),
    }

    def assertion_verifies(form):
        def run():
            resp = call_app(tokens["service_account"])
            assertion = resp.json()["headers"]["x-goog-iap-jwt-assertion"]
            claims = verify(assertion, aud=assertion_audience, certs_url=iap_keys[form])
            assert claims["iss"] == "https://cloud.google.com/iap", claims
            assert claims["email"] == sa_email, claims
            assert claims["sub"].startswith("accounts.google.com:"), claims
            try:
                verify(assertion, aud="/projects/1/apps/someone-else", certs_url=iap_keys[form])
            # google-auth raises ValueError for the PEM map, PyJWT its own
            # InvalidAudienceError for a JWK Set.
            except Exception as e:  # noqa: BLE001
                assert "audience" in str(e).lower(), e
            else:
                raise AssertionError("an assertion for another audience verified")

        return run

    for form in iap_keys:
        check(f"id_token.verify_token accepts the gate's x-goog-iap-jwt-assertion against the {form}", assertion_verifies(form))

    def rotated_assertion_verifies():
        kids = emu.call("POST", "rotate-assertion-keys")["kids"]
        assertion = emu.call("POST", "assertions", {"email": "peer@example.com"})["assertion"]
        claims = verify(assertion, aud=assertion_audience, certs_url=iap_keys["JWK Set"])
        assert claims["email"] == "peer@example.com", claims
        assert len(kids) == 2, kids

    check("an assertion under a rotated IAP key verifies", rotated_assertion_verifies)

    def gate_rejects_without_token():
        resp = requests.get(app_url, timeout=10)
        assert resp.status_code == 401, resp.status_code
        assert "empty token" in resp.text, resp.text

    check("gated app answers IAP's 401 without a token", gate_rejects_without_token)

    def gate_rejects_revoked():
        creds = service_account.IDTokenCredentials.from_service_account_file(key_file, target_audience=audience)
        creds.refresh(request)
        assert call_app(creds.token).status_code == 200
        emu.call("POST", "revoke", {"token": creds.token})
        expect_iap_401(creds.token, "Invalid IAP credentials")

    check("gated app answers IAP's 401 to a revoked token", gate_rejects_revoked)

    def gate_rejects_expired():
        emu.call("POST", "lifetime", {"seconds": 60})
        try:
            creds = service_account.IDTokenCredentials.from_service_account_file(key_file, target_audience=audience)
            creds.refresh(request)
            assert call_app(creds.token).status_code == 200
            emu.call("POST", "clock", {"advance_seconds": 61})
            expect_iap_401(creds.token, "expired")
        finally:
            emu.call("POST", "clock", {"offset_seconds": 0})
            emu.call("POST", "lifetime", {"seconds": 3600})

    check("gated app answers IAP's 401 to an expired token", gate_rejects_expired)

    def gate_rejects_wrong_audience():
        creds = service_account.IDTokenCredentials.from_service_account_file(
            key_file, target_audience="https://some-other-app.example.com"
        )
        creds.refresh(request)
        expect_iap_401(creds.token, "Invalid JWT audience")

    check("gated app answers IAP's 401 to a token for another audience", gate_rejects_wrong_audience)

    # --- ADC files of every type, loaded the way google.auth.default() does.
    adc = Path(env["IAP_EMULATOR_ADC_DIR"])

    # from_authorized_user_info ignores the file's token_uri ("always
    # overrides" with this constant), for plain and impersonation sources.
    import google.oauth2.credentials as user_credentials

    user_credentials._GOOGLE_OAUTH2_TOKEN_ENDPOINT = base + "/token"

    def authorized_user_refresh():
        info = json.load(open(adc / "authorized_user.json"))
        creds = user_credentials.Credentials.from_authorized_user_file(str(adc / "authorized_user.json"))
        creds.refresh(request)
        assert creds.token.startswith("ya29."), creds.token
        claims = verify(creds.id_token, aud=info["client_id"])
        assert claims["email"] == "adc-user@example.com", claims

    check("authorized_user file refreshes through the token endpoint with an id_token", authorized_user_refresh)

    def impersonated_file_id_token():
        creds, _ = google.auth.load_credentials_from_file(str(adc / "impersonated_service_account.json"))
        id_creds = impersonated_credentials.IDTokenCredentials(
            target_credentials=creds, target_audience=audience, include_email=True
        )
        id_creds.refresh(request)
        claims = verify(id_creds.token)
        assert claims["email"].startswith("adc-target@"), claims
        assert call_app(id_creds.token).status_code == 200

    check("impersonated_service_account file (user source) yields an ID token the gate accepts", impersonated_file_id_token)

    def external_account(name):
        def run():
            # load_credentials_from_file would also ask Cloud Resource
            # Manager (a Google host) for the project ID; the class does not.
            from google.auth import identity_pool

            creds = identity_pool.Credentials.from_file(
                str(adc / name), scopes=["https://www.googleapis.com/auth/cloud-platform"]
            )
            before = emu.counter("access_tokens", "sts")
            creds.refresh(request)
            assert creds.token.startswith("ya29."), creds.token
            assert emu.counter("access_tokens", "sts") == before + 1

        return run

    for name in ["external_account_file.json", "external_account_url.json"]:
        check(f"{name} exchanges its subject token at STS and impersonates", external_account(name))

    return failures


if __name__ == "__main__":
    sys.exit(main())
