"""Who is asking: an API key, the person a portal's key acts for, or a person signed in with
the identity provider; and what each may read.

A key's filters limit everything it does. A person's access (rag.filters.Access) is applied on
top, inside retrieval and every listing, so a portal's key never gives a person more than the
key may see, and a person never sees more than their access lists allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.errors import IngestError
from rag.filters import Access
from rag.ingest.acl import access_list
from rag.serve.keys import SCOPES, ApiKey, Scope

USER_HEADER = "X-Rag-User"
GROUPS_HEADER = "X-Rag-Groups"
# The page's signed-in session: the provider's ID token, in an HttpOnly cookie. It is honoured only
# on requests that also carry PAGE_HEADER, which a page of another site cannot send (it is not a
# CORS-safelisted header), so no other site can make a signed-in browser act.
SESSION_COOKIE = "rag_session"
PAGE_HEADER = "X-Rag-Page"
_MOST_NAME = 512
_MOST_GROUPS = 10_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SIGNED_IN = "oidc"  # the `owner` prefix of signed-in people (a key id is 12 hex digits)


class BadPerson(ValueError):
    """X-Rag-User or X-Rag-Groups cannot be understood; the message says which and why."""


@dataclass(frozen=True)
class Caller:
    """The key (None for a signed-in person, and in open access), the person whose access applies
    (None: the key's own), and what the caller may do."""

    key: ApiKey | None
    person: Access | None
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        """read < write < admin: each scope includes the ones before it."""
        return SCOPES.index(self.scope) >= SCOPES.index(needed)

    def filters(self, requested: list[str] | tuple[str, ...] = ()) -> list[str]:
        """The key's filters and the request's: all must hold, so a key never sees past its own."""
        return [*(self.key.filters if self.key else ()), *requested]

    @property
    def owner(self) -> str | None:
        """Who owns what the caller makes (upload jobs, answers to rate): the key by its id, and
        the person within it; None in open access."""
        if self.key is None and self.person is None:
            return None
        base = self.key.key_id if self.key else SIGNED_IN
        return f"{base}:{self.person.user}" if self.person else base

    @property
    def name(self) -> str | None:
        """For logs: the key's name, or `oidc` for a signed-in person."""
        return self.key.name if self.key else (SIGNED_IN if self.person else None)


OPEN = Caller(None, None, "admin")


def header_text(raw: str) -> str:
    """A header value as the client meant it: HTTP carries bytes, which Starlette reads as Latin-1;
    a portal sends names in UTF-8 ("José"), so they are read again as UTF-8 when they are."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def passed_person(user: str | None, groups: str | None) -> Access | None:
    """The person a portal passes (X-Rag-User, and X-Rag-Groups as comma-separated names);
    None when it passes none. BadPerson for a value that cannot be a name."""
    if user is None:
        if groups is not None:
            raise BadPerson(f"{GROUPS_HEADER} was sent without {USER_HEADER}: name the person too")
        return None
    name = header_text(user).strip()
    if not name or len(name) > _MOST_NAME or _CONTROL.search(name):
        raise BadPerson(f"{USER_HEADER} must be the person's id: 1-{_MOST_NAME} characters, no control characters")
    names = [header_text(g).strip() for g in (groups or "").split(",")]
    names = [g for g in names if g]
    if len(names) > _MOST_GROUPS or any(len(g) > _MOST_NAME or _CONTROL.search(g) for g in names):
        raise BadPerson(f"{GROUPS_HEADER} must be at most {_MOST_GROUPS:,} comma-separated group names of "
                        f"1-{_MOST_NAME} characters each")
    return Access(name, tuple(sorted(set(names))))


def granted_acl(requested: object, caller: Caller, where: str) -> str | dict[str, list[str]] | None:
    """The access list an upload may give its documents: a person may share only with themselves
    and the groups they are in (never "public": a person must not put text into everyone's answers),
    and gets a list naming them alone when they give none; a key acting for no one may give any
    list (None: the collection's default). ValueError names what is not allowed."""
    if requested is None:
        return {"users": [caller.person.user], "groups": []} if caller.person else None
    try:
        acl = access_list(requested)
    except IngestError as exc:
        raise ValueError(f"{where}: {exc.reason}") from None
    if caller.person is None:
        return acl
    if acl == "public":
        raise ValueError(f"{where}: a person may not make a document public; name users and groups")
    assert isinstance(acl, dict)
    others = sorted(set(acl["users"]) - {caller.person.user})
    foreign = sorted(set(acl["groups"]) - set(caller.person.groups))
    if others or foreign:
        raise ValueError(f"{where}: {caller.person.user!r} may share only with themselves and their own groups, "
                         f"not {', '.join(map(repr, others + foreign))}")
    if not acl["users"] and not acl["groups"]:
        raise ValueError(f"{where}: the list names nobody; name at least {caller.person.user!r}")
    return acl
