"""`rag keys add|list|revoke`: the API keys of the HTTP service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from rag.cli.common import TYPER_SETTINGS, IndexOpt, JsonOpt, err, load_settings, out, print_json, shown
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.serve.keys import KeyStore

app = typer.Typer(help="API keys of the HTTP service: scoped, limited to documents by filters, stored hashed.",
                  **TYPER_SETTINGS)


def key_store(index_dir: Optional[Path], settings: Optional[Settings] = None) -> KeyStore:
    """The key store of --index (or of these settings' index)."""
    from rag.serve.keys import KeyStore, keys_path

    settings = settings or load_settings({"index.path": index_dir})[0]
    return KeyStore(keys_path(settings.index.path, settings.serve.keys_file))


@app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="A name for the key (a portal, a team); shown in logs, never the key.")],
    scope: Annotated[str, typer.Option("--scope", help="read (ask, search, list, feedback), write (also upload and "
                                                      "delete) or admin (also stats and keys).")] = "read",
    filters: Annotated[Optional[list[str]], typer.Option(
        "--filter", "-f", help="Limit the key to documents matching KEY=VALUE (repeatable, all must hold; the "
                               "`rag search --filter` language), e.g. source=hr/* or collection=hr.")] = None,
    on_behalf: Annotated[bool, typer.Option(
        "--on-behalf", help="For a portal that signs people in itself: each request passes the person "
                            "(X-Rag-User, X-Rag-Groups) and gets exactly that person's access, within the "
                            "key's filters. Such a key cannot be used without a person.")] = False,
    index_dir: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    store = key_store(index_dir)
    key, token = store.add(name, scope, filters, on_behalf)  # type: ignore[arg-type]
    if json_out:
        print_json({**key.as_dict(), "key": token})
        return
    out.print(token)
    err.print(f"key {shown(name)} ({scope}"
              + (f", limited to {shown(' and '.join(key.filters))}" if key.filters else "")
              + (", on behalf of the people it passes" if key.on_behalf else "")
              + f") stored in {shown(store.path)}; this is the only time it is shown")


@app.command("list")
def keys_list(index_dir: IndexOpt = None, json_out: JsonOpt = False,
              revoked: Annotated[bool, typer.Option("--revoked", help="Also list revoked keys.")] = False) -> None:
    """The keys (names, scopes, filters; never the keys themselves)."""
    keys = key_store(index_dir).list(include_revoked=revoked)
    if json_out:
        print_json([k.as_dict() for k in keys])
        return
    if not keys:
        out.print("no keys (`rag keys add NAME --scope read` creates one)")
    for k in keys:
        out.print(f"{shown(k.name):<24} {k.scope:<6} {shown(' and '.join(k.filters)) or 'all documents':<32} "
                  f"created {k.created_at}" + (", on behalf of people" if k.on_behalf else "")
                  + (f", revoked {k.revoked_at}" if k.revoked_at else ""))


@app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")], index_dir: IndexOpt = None) -> None:
    """Revoke a key at once; requests carrying it get 401."""
    if not key_store(index_dir).revoke(name):
        raise RagError(f"no active key named {name!r} (see `rag keys list`)")
    out.print(f"key {shown(name)} revoked")
