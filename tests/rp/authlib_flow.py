"""A relying party written with Python authlib signs a person in against Portcullis.

Usage: authlib_flow.py ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD
The browser part (login and consent forms) is played by `requests`; everything OAuth is
authlib's: the PKCE authorization URL, the code exchange, ID token verification against the
JWKS, userinfo, refreshing (with rotation) and revoking the refresh token. Prints one JSON line
with what it saw; exits non-zero on any failure.
"""
import html
import json
import re
import secrets
import sys
import urllib.parse
import warnings

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

warnings.simplefilter("ignore")  # authlib.jose's deprecation notice
from authlib.jose import JsonWebKey, jwt  # noqa: E402

issuer, client_id, client_secret, redirect_uri, username, password = sys.argv[1:7]
meta = requests.get(issuer + "/.well-known/openid-configuration", timeout=10).json()

rp = OAuth2Session(
    client_id,
    client_secret,
    scope="openid profile email",
    redirect_uri=redirect_uri,
    code_challenge_method="S256",
    token_endpoint_auth_method="client_secret_basic",
)
verifier = secrets.token_urlsafe(48)
nonce = secrets.token_urlsafe(16)
auth_url, state = rp.create_authorization_url(
    meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
)

browser = requests.Session()


def hidden_fields(page):
    return {
        html.unescape(n): html.unescape(v)
        for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    }


login = browser.get(auth_url, timeout=10)
assert login.status_code == 200, login.text
form = hidden_fields(login.text)
form.update(username=username, password=password)
after = browser.post(issuer + "/login", data=form, allow_redirects=False, timeout=10)
if after.status_code == 200:
    form = hidden_fields(after.text)
    form["decision"] = "allow"
    after = browser.post(issuer + "/consent", data=form, allow_redirects=False, timeout=10)
assert after.status_code == 303, (after.status_code, after.text)
callback = after.headers["Location"]

token = rp.fetch_token(
    meta["token_endpoint"],
    authorization_response=callback,
    state=state,
    code_verifier=verifier,
)
jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
claims = jwt.decode(
    token["id_token"],
    jwks,
    claims_options={
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "nonce": {"essential": True, "value": nonce},
    },
)
claims.validate()
userinfo = rp.get(meta["userinfo_endpoint"], timeout=10).json()
assert userinfo["sub"] == claims["sub"], (userinfo, claims)

# Refresh through authlib: a new access token and a rotated refresh token.
first_refresh = token["refresh_token"]
refreshed = rp.refresh_token(meta["token_endpoint"], refresh_token=first_refresh)
assert refreshed["refresh_token"] != first_refresh, "rotated"
refreshed_claims = jwt.decode(refreshed["id_token"], jwks)
refreshed_claims.validate()
assert refreshed_claims["sub"] == claims["sub"]
assert refreshed_claims["auth_time"] == claims["auth_time"]
assert rp.get(meta["userinfo_endpoint"], timeout=10).json()["sub"] == claims["sub"]

# Revoke through authlib; refreshing with the revoked token then fails with invalid_grant.
revoked = rp.revoke_token(
    meta["revocation_endpoint"], token=refreshed["refresh_token"], token_type_hint="refresh_token"
)
assert revoked.status_code == 200, revoked.text
refused = None
try:
    rp.refresh_token(meta["token_endpoint"], refresh_token=refreshed["refresh_token"])
except OAuthError as e:
    refused = e.error
callback_params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
print(json.dumps({"sub": claims["sub"], "userinfo": userinfo, "scope": token.get("scope"),
                  "iss_in_callback": callback_params.get("iss"),
                  "rotated": refreshed["refresh_token"] != first_refresh,
                  "refreshed_iss": refreshed_claims["iss"],
                  "refresh_after_revoke": refused}))
