"""A real OpenID Connect provider on 127.0.0.1 for the tests (the oidc-provider-mock package:
discovery, JWKS, authorization and token endpoints, RS256 ID tokens), and a way to get its
tokens without a browser.

Tokens that must be refused for one reason only (expired, wrong audience or issuer) are signed
with the provider's own key, read through a test-only route, so that nothing else is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import flask
import httpx
import jwt
import werkzeug.serving
from oidc_provider_mock import User, app as provider_app

CLIENT_ID = "rag-portal"
REDIRECT = "http://127.0.0.1:1/callback"  # never followed: the code is read from the Location


@dataclass
class Provider:
    issuer: str

    def token(self, sub: str, client_id: str = CLIENT_ID) -> str:
        """An ID token for `sub`, through the authorization code flow (the form a person submits)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {"client_id": client_id, "redirect_uri": REDIRECT, "response_type": "code", "scope": "openid",
                 "state": "s", "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
                 "code_challenge_method": "S256"}
        answer = httpx.post(f"{self.issuer}/oauth2/authorize", params=query, data={"sub": sub})
        assert answer.status_code == 302, answer.text
        code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
        tokens = httpx.post(f"{self.issuer}/oauth2/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id,
            "client_secret": "any", "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        return tokens.json()["id_token"]

    def signing_key(self) -> tuple[Any, str]:
        """The provider's private key and its key id (test-only route)."""
        jwk = httpx.get(f"{self.issuer}/test/private-jwk").json()
        return jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk)), jwk["kid"]

    def forged(self, sub: str, groups: list[str], key: Any = None, kid: str | None = None, **claims: Any) -> str:
        """A token with these claims (valid ones unless overridden), signed with `key` (the
        provider's own by default)."""
        own, own_kid = self.signing_key()
        now = int(time.time())
        body = {"iss": self.issuer, "aud": CLIENT_ID, "sub": sub, "groups": groups, "iat": now, "exp": now + 600,
                **claims}
        return jwt.encode(body, key or own, algorithm="RS256", headers={"kid": kid or own_kid})


def _expose_key(app: flask.Flask) -> None:
    @app.get("/test/private-jwk")
    def private_jwk() -> Any:
        return flask.jsonify(flask.g.oidc_provider_mock_storage.jwk.as_dict(is_private=True))


@contextmanager
def running_provider(users: dict[str, dict[str, Any]]) -> Iterator[Provider]:
    """The provider on a free port of 127.0.0.1, knowing `users` (sub -> extra claims such as
    groups), until the block ends."""
    app = provider_app(user_claims=[User(sub=sub, claims=claims) for sub, claims in users.items()])
    _expose_key(app)
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield Provider(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
