"""`rag serve`: the HTTP API, after its models, its index and its keys have been checked."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from rag.cli.common import IndexOpt, engine_for_reading, err, fail, state
from rag.cli.keys import key_store

if TYPE_CHECKING:
    from pathlib import Path

    from rag.config import Settings
    from rag.engine import Engine
    from rag.serve.keys import KeyStore


def _ready(index_dir: Optional[Path], host: Optional[str], port: Optional[int],
           workers: Optional[int]) -> tuple[Engine, KeyStore, bool]:
    """The engine to serve (its index built, its generators made), its key store and whether a key is
    active: all checked before any model loads in a worker or anything listens."""
    from rag.generate.factory import make_generator
    from rag.serve.metrics import multiprocess_dir
    from rag.serve.service import offered_generators

    multiprocess_dir()  # a PROMETHEUS_MULTIPROC_DIR that cannot work is named before any model loads
    # The default index is built from corpus.path on first use, as for `rag ask`.
    engine = engine_for_reading({"index.path": index_dir, "serve.host": host, "serve.port": port,
                                 "serve.workers": workers})
    store = key_store(index_dir, engine.settings)
    has_keys = store.any_active()
    # A generator that is not configured fails here, with its message, not in every worker.
    for generator in offered_generators(engine.settings):
        make_generator(engine.settings, engine.embedder, generator)
    return engine, store, has_keys


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_access(store: KeyStore, has_keys: bool, host: str, loopback: bool, insecure_no_auth: bool,
                  issuer: str = "") -> bool:
    """Whether requests must say who they are (keys configured, or people signing in with the
    identity provider `issuer`); refuses (exit 2) to open every document to the network unasked."""
    if issuer:
        err.print(f"people sign in with {issuer}" + ("" if store.configured() else "; no API keys yet"))
        return True
    if not has_keys and not loopback and not insecure_no_auth:
        raise fail(f"no API keys exist, and {host} is reachable from other machines: add a key first "
                   f"(`rag keys add NAME --scope read`, stored in {store.path}), or pass --insecure-no-auth "
                   "to serve every document to anyone who can connect", 2)
    configured = store.configured()
    if not configured:
        err.print(f"[yellow]serving without keys[/]: every request may read every document "
                  f"({'loopback only' if loopback else 'OPEN TO THE NETWORK'}) until a key is added")
    elif not has_keys:
        err.print("[yellow]every key is revoked[/]: requests get 401 until `rag keys add` makes a new one")
    return configured


def _run_workers(settings: Settings, configured: bool, loopback: bool) -> None:
    """Several processes, each building its own app from the environment the flags are passed on in."""
    import uvicorn

    from rag.config import env_var_name
    from rag.serve.app import CONFIG_ENV, NETWORK_OPEN, OPEN_ACCESS_ENV
    from rag.serve.connections import protocol_factory
    from rag.serve.metrics import shared_metrics_dir

    open_mode = "0" if configured else "1" if loopback else NETWORK_OPEN
    os.environ.update({env_var_name("index.path"): str(settings.index.path), OPEN_ACCESS_ENV: open_mode})
    if state.config_file:
        os.environ[CONFIG_ENV] = str(state.config_file)
    # Prometheus multi-process mode, so that /metrics on any worker reports every worker's counts.
    with shared_metrics_dir():
        uvicorn.run("rag.serve.app:app_from_environment", factory=True, host=settings.serve.host,
                    port=settings.serve.port, workers=settings.serve.workers, log_level="info", access_log=False,
                    http=protocol_factory(settings.serve))


def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on [serve.host].")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port to listen on [serve.port].", min=1,
                                                max=65535)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Server processes [serve.workers]; each "
                                                   "loads its own models.", min=1, max=64)] = None,
    index_dir: IndexOpt = None,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="Serve a non-loopback address without keys (anyone who reaches it reads "
                                   "every document).")] = False,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs); models and the index load before it listens."""
    import uvicorn

    from rag.serve.app import CONFIG_ENV, create_app
    from rag.serve.connections import protocol_factory
    from rag.serve.middleware import log_access_to_stderr

    engine, store, has_keys = _ready(index_dir, host, port, workers)
    settings = engine.settings
    loopback = _is_loopback(settings.serve.host)
    configured = _check_access(store, has_keys, settings.serve.host, loopback, insecure_no_auth,
                               settings.oidc.issuer)
    log_access_to_stderr()
    if settings.serve.workers != 1:
        _run_workers(settings, configured, loopback)
        return
    # Deadlines for slow clients' headers and bodies, and a cap on connections per address.
    from rag.sources.settings import declared_sources

    sources = declared_sources(state.config_file or os.environ.get(CONFIG_ENV) or None)
    uvicorn.run(create_app(settings, open_access=not configured, engine=engine, loopback_only=loopback,
                           sources=sources),
                host=settings.serve.host, port=settings.serve.port, log_level="info", access_log=False,
                http=protocol_factory(settings.serve))
