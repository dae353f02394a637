"""Signed-in people: OpenID Connect tokens from the company's identity provider, checked with
PyJWT against the provider's published keys (JWKS).

The provider is found through its discovery document; its keys are cached and fetched again
when a token names a key id not among them (the provider rotated its keys), at most once per
`oidc.jwks_refresh` seconds, so tokens with made-up key ids cannot make the server flood the
provider. A token is accepted only when it is signed by one of those keys with an allowed
asymmetric algorithm (never `none`, never HMAC), was issued by the configured issuer for the
configured audience, and is within its `nbf` and `exp`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from rag.config import OidcSettings
from rag.errors import ConfigError, RagError
from rag.filters import Access

_MOST_GROUPS = 10_000
_MOST_NAME = 512


class InvalidToken(Exception):
    """The token is not one this server accepts; the message says why (answered 401)."""


@dataclass(frozen=True)
class Provider:
    """What discovery tells of the provider."""

    issuer: str
    jwks_uri: str
    authorization_endpoint: str
    token_endpoint: str
    end_session_endpoint: str | None


class OidcVerifier:
    """Checks bearer tokens of one provider and reads the person from their claims."""

    def __init__(self, settings: OidcSettings, client: httpx.Client | None = None) -> None:
        if not settings.audience:
            raise ConfigError("oidc.issuer is set but oidc.audience is empty: give the client id the provider "
                              "issues tokens for (their `aud`)")
        self.settings = settings
        self._http = client or httpx.Client(timeout=10.0, follow_redirects=False)
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._provider: Provider | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")

    def provider(self) -> Provider:
        """The discovery document, read once (a RagError when the provider cannot be reached)."""
        with self._lock:
            if self._provider is None:
                found = self._get_json(f"{self.settings.issuer}/.well-known/openid-configuration")
                if str(found.get("issuer", "")).rstrip("/") != self.settings.issuer:
                    raise RagError(f"the provider at {self.settings.issuer} calls itself {found.get('issuer')!r}: "
                                   "set oidc.issuer to exactly its issuer")
                try:
                    self._provider = Provider(self.settings.issuer, found["jwks_uri"], found["authorization_endpoint"],
                                              found["token_endpoint"], found.get("end_session_endpoint"))
                except KeyError as exc:
                    raise RagError(f"the provider's discovery document has no {exc.args[0]}") from None
            return self._provider

    def person(self, token: str, nonce: str | None = None) -> Access:
        """The person a valid token names, with their groups; InvalidToken otherwise."""
        claims = self.claims(token, nonce)
        return person_of(claims, self.settings)

    def claims(self, token: str, nonce: str | None = None) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"not a JWT ({exc})") from None
        algorithm = header.get("alg")
        if algorithm not in self.settings.algorithms:
            raise InvalidToken(f"tokens signed with {algorithm!r} are not accepted (oidc.algorithms)")
        key = self._key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[algorithm], audience=self.settings.audience, issuer=self.settings.issuer,
                leeway=self.settings.leeway, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired; sign in again") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token was refused: {exc}") from None
        if nonce is not None and claims.get("nonce") != nonce:
            raise InvalidToken("the token's nonce is not the one this sign-in sent")
        return claims

    def _key(self, kid: Any) -> jwt.PyJWK:
        """The provider's key of this id (or its only key, for a token that names none), fetching
        the key set again when it is unknown: at most once per oidc.jwks_refresh seconds, and 5
        seconds after a failed fetch."""
        known = self._known(kid)
        if known is None:
            with self._refresh_lock:  # one fetch at a time; the others then find its keys
                known = self._known(kid)
                if known is None and time.monotonic() - self._fetched_at >= self.settings.jwks_refresh:
                    self._fetched_at = time.monotonic()
                    try:
                        self._keys = self._fetch_keys()
                    except RagError:
                        self._fetched_at = time.monotonic() - self.settings.jwks_refresh + 5
                        raise
                    known = self._known(kid)
        if known is None:
            raise InvalidToken(f"the token's key id {str(kid)[:64]!r} is not one of the provider's keys"
                               if kid is not None else "the token names no key id, and the provider has several keys")
        return known

    def _known(self, kid: Any) -> jwt.PyJWK | None:
        keys = self._keys
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid) if isinstance(kid, str) else None

    def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        found = self._get_json(self.provider().jwks_uri)
        keys: dict[str, jwt.PyJWK] = {}
        for entry in found.get("keys", []) if isinstance(found.get("keys"), list) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                keys[str(entry.get("kid", ""))] = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type PyJWT cannot use: tokens signed with it are refused
        return keys

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self._http.get(url)
            response.raise_for_status()
            found = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RagError(f"cannot read {url} from the identity provider ({exc}); check oidc.issuer") from None
        if not isinstance(found, dict):
            raise RagError(f"{url} is not a JSON object")
        return found

    def close(self) -> None:
        self._http.close()


def person_of(claims: dict[str, Any], settings: OidcSettings) -> Access:
    """The person (oidc.user_claim) and their groups (oidc.groups_claim, a dotted path)."""
    user = claims.get(settings.user_claim)
    if not isinstance(user, str) or not user.strip() or len(user) > _MOST_NAME:
        raise InvalidToken(f"the token has no usable {settings.user_claim!r} claim naming the person "
                           "(oidc.user_claim)")
    groups: Any = claims
    for part in settings.groups_claim.split(".") if settings.groups_claim else []:
        groups = groups.get(part) if isinstance(groups, dict) else None
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list):
        groups = []
    names = tuple(sorted({g for g in groups if isinstance(g, str) and g.strip() and len(g) <= _MOST_NAME}))
    if len(names) > _MOST_GROUPS:
        raise InvalidToken(f"the token lists {len(names):,} groups, over {_MOST_GROUPS:,}")
    return Access(user, names)
