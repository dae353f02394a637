"""deploy/ (Dockerfile, compose.yaml, prometheus.yml) agrees with the code it deploys.

Nothing here builds or runs a container: each check reads a deploy file and holds it against the
real CLI, settings, key store and routes, so renaming a flag, a setting or a route fails here
instead of in somebody's cluster.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import typer.main
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from rag import Settings
from rag.cli import app as cli_app
from rag.config import env_var_name, known_keys
from rag.serve.keys import SCOPES, KeyStore, keys_path

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


# -- reading the files ---------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        op, _, rest = (current + stripped).partition(" ")
        instructions.append((op.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return instructions


def last(name: str) -> str:
    """The arguments of the instruction that counts (Docker uses the last CMD, ENTRYPOINT, ...)."""
    found = [rest for op, rest in dockerfile() if op == name]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def exec_form(text: str) -> list[str]:
    argv = json.loads(text)  # the shell form would put /bin/sh -c in front: signals miss the server
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), text
    return argv


def image_argv() -> list[str]:
    return exec_form(last("ENTRYPOINT")) + exec_form(last("CMD"))


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, rest in dockerfile():
        if op == "ENV":
            for item in shlex.split(rest):
                name, sep, value = item.partition("=")
                assert sep, f"ENV {rest!r}: write NAME=VALUE"
                env[name] = value
    return env


def interpolate(value: Any) -> Any:
    """Compose's ${NAME:-default} and ${NAME-default} with nothing set: the default ("" for ${NAME})."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8")))


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def option_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag:
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_cli(argv: list[str]) -> tuple[Any, Any]:
    """What the real `rag` CLI makes of argv (after `rag`), without running it: an unknown
    command, an unknown option or a bad value raises as it would on the command line. (Typer
    may bring its own copy of click, so groups are recognised by their `commands`.)"""
    command = typer.main.get_command(cli_app)
    args = list(argv)
    while hasattr(command, "commands"):
        name, *args = args
        sub = command.commands.get(name)
        assert sub is not None, f"rag has no command {name!r} ({' '.join(argv)})"
        command = sub
    return command, command.make_context(command.name or "rag", args)


def option_names(command: Any) -> set[str]:
    return {name for param in command.params for name in getattr(param, "opts", [])}


def serve_params() -> dict[str, Any]:
    argv = image_argv()
    assert argv[:2] == ["rag", "serve"], argv
    return parse_cli(argv[1:])[1].params


def settings_for(env: dict[str, str]) -> Settings:
    """The settings the container's environment gives, with every RAG_* name a real setting's."""
    by_name = {env_var_name(key): key for key in known_keys()}
    for name in env:
        if name.startswith("RAG_"):
            assert name in by_name, f"{name} is no setting's variable (rag/config.py env_var_name of config.toml's keys)"
    return Settings.load(environ=env)


# -- the real app --------------------------------------------------------------------------------

@pytest.fixture
def service_app(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """The real app over an empty index that has keys (as the image requires), without its
    lifespan: routes and auth are real, no model is loaded. Yields the client and a token per scope."""
    from fastapi.testclient import TestClient

    from rag.serve.app import create_app

    index = tmp_path / "index"
    settings = Settings.load(overrides={"index.path": str(index)}, environ={})
    store = KeyStore(keys_path(settings.index.path, settings.serve.keys_file))
    tokens = {scope: store.add(f"test-{scope}", scope, [])[1] for scope in SCOPES}
    app = create_app(settings, open_access=False)
    try:
        yield TestClient(app), tokens
    finally:
        app.state.service.close()


# -- the image -----------------------------------------------------------------------------------

def test_image_runs_rag_serve_with_the_flags_the_tests_start_it_with() -> None:
    argv = image_argv()
    command, ctx = parse_cli(argv[1:])
    assert ctx.params["host"] == "0.0.0.0"
    # Keys are required on a non-loopback host: the image must not switch that off.
    assert "--insecure-no-auth" in option_names(command)
    assert ctx.params["insecure_no_auth"] is False
    assert PYPROJECT["project"]["scripts"]["rag"] == "rag.cli:main"

    # tests/serving.py starts `python -m rag serve --port P --index I ...`: the image passes the same flags.
    tree = ast.parse((REPO / "tests" / "serving.py").read_text(encoding="utf-8"))
    popens = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Attribute) and node.func.attr == "Popen"]
    assert popens, "tests/serving.py no longer starts the server with subprocess.Popen"
    started = [e.value for e in popens[0].args[0].elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    assert started[started.index("rag"):][:2] == ["rag", "serve"], started
    test_flags = {arg for arg in started if arg.startswith("--")}
    assert test_flags and test_flags <= set(argv), f"the tests start rag serve with {sorted(test_flags)}; the image: {argv}"


def test_image_keeps_the_index_and_its_keys_on_the_volume() -> None:
    params = serve_params()
    index = PurePosixPath(str(params["index_dir"]))
    env = image_env()
    assert env[env_var_name("index.path")] == str(index)
    # `rag keys add` in the container (no --index) writes the keys `rag serve --index` reads.
    settings = settings_for(env)
    assert keys_path(settings.index.path, settings.serve.keys_file) == keys_path(Path(str(index)), "")
    volumes = [v for rest in (r for op, r in dockerfile() if op == "VOLUME") for v in exec_form(rest)]
    assert str(index) in volumes
    assert [rest.split("/")[0] for op, rest in dockerfile() if op == "EXPOSE"] == [str(params["port"])]
    user = last("USER").split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_probes_a_route_that_needs_no_key(service_app: tuple[Any, dict[str, str]]) -> None:
    rest = last("HEALTHCHECK")
    options, _, command = rest.partition("CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    probe = " ".join(exec_form(command))
    urls = re.findall(r"https?://[^'\"\s]+", probe)
    assert len(urls) == 1, probe
    url = urlparse(urls[0])
    assert url.port == serve_params()["port"]
    client, _ = service_app
    assert client.get(url.path + "-no-such-route").status_code == 404
    # The probe sends no key: 200 when ready, 503 while loading (here: never started), never 401/404.
    assert client.get(url.path).status_code in (200, 503)


def test_image_installs_the_pinned_cpu_torch_then_the_project() -> None:
    runs = [rest for op, rest in dockerfile() if op == "RUN" and "pip install" in rest]
    pins = [d for d in PYPROJECT["project"]["dependencies"] if re.match(r"torch\s*==", d)]
    assert len(pins) == 1, "pyproject.toml no longer pins torch exactly"
    torch_run = [i for i, rest in enumerate(runs) if re.search(r"\btorch==", rest)]
    assert torch_run, "the image does not install torch on its own"
    first = runs[torch_run[0]]
    assert re.search(r"\btorch==(\S+)", first).group(1) == pins[0].split("==")[1].strip()
    assert "--index-url https://download.pytorch.org/whl/cpu" in first  # PyPI's torch pulls CUDA

    project = [i for i, rest in enumerate(runs) if re.search(r"\s'?\.(\[[^\]]*\])?'?(\s|$)", rest)]
    assert project and project[0] > torch_run[0], "torch must be installed before the project, or pip takes PyPI's"
    install = runs[project[0]]
    extras = re.search(r"\.\[([^\]]*)\]", install)
    extras_wanted = {e.strip() for e in extras.group(1).split(",")} if extras else set()
    assert "cpu" in extras_wanted  # FAISS comes only from an extra
    assert extras_wanted <= set(PYPROJECT["project"]["optional-dependencies"])
    if not re.search(r"\s(-e|--editable)\s", install):
        # A built wheel must carry the default settings (a symlink to config.toml) itself.
        assert "default_config.toml" in PYPROJECT["tool"]["setuptools"]["package-data"].get("rag", [])

    # An editable install reads the sources in place: they must all have been copied in.
    copied = {src.rstrip("/") for op, rest in dockerfile() if op == "COPY"
              for src in shlex.split(rest)[:-1] if not src.startswith("--")}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], "rag",
              str((REPO / "rag" / "default_config.toml").resolve().relative_to(REPO))}
    assert needed <= copied, f"the image copies {sorted(copied)}; it needs {sorted(needed)}"

    base = re.fullmatch(r"python:(\d+\.\d+)[-\w.]*", last("FROM").split()[0])
    assert base and Version(base.group(1)) in SpecifierSet(PYPROJECT["project"]["requires-python"])


# -- compose -------------------------------------------------------------------------------------

def test_compose_builds_the_image_and_mounts_the_index_volume() -> None:
    rag = compose()["services"]["rag"]
    context = (DEPLOY / rag["build"]["context"]).resolve()
    assert context == REPO
    assert (context / rag["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    params = serve_params()
    targets = [str(v).split(":")[1] if isinstance(v, str) else v["target"] for v in rag["volumes"]]
    assert str(params["index_dir"]) in targets
    published = [str(p).rsplit(":", 1)[-1].split("/")[0] for p in rag["ports"]]
    assert published == [str(params["port"])]


def test_compose_points_rag_at_the_vllm_service_through_real_settings() -> None:
    services = compose()["services"]
    env = image_env() | service_env(services["rag"])
    settings = settings_for(env)
    assert settings.answer.generator == "openai"
    url = urlparse(settings.generate.openai_base_url)
    assert url.hostname in services, f"{url.hostname} is not a service of compose.yaml"
    vllm = services[url.hostname]
    argv = [str(a) for a in vllm["command"]]
    assert url.port == int(option_value(argv, "--port") or 8000)  # vLLM's OpenAI server's default port
    assert url.path.rstrip("/") == "/v1"
    assert settings.generate.openai_model == option_value(argv, "--model")
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device.get("capabilities", []) for device in devices)


def test_prometheus_scrapes_the_metrics_route_of_every_replica_with_an_admin_key(
        service_app: tuple[Any, dict[str, str]]) -> None:
    services = compose()
    prometheus = services["services"]["prometheus"]
    config_file = next(Path(v.split(":")[0]) for v in prometheus["volumes"]
                       if v.split(":")[1] == "/etc/prometheus/prometheus.yml")
    assert (DEPLOY / config_file).resolve() == DEPLOY / "prometheus.yml"
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["rag"] and discovery["type"] == "A"
    assert discovery["port"] == serve_params()["port"]
    secret = PurePosixPath(job["authorization"]["credentials_file"])
    assert secret.parent == PurePosixPath("/run/secrets") and secret.name in prometheus["secrets"]
    assert secret.name in services["secrets"]

    path = job.get("metrics_path", "/metrics")
    client, tokens = service_app
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": f"Bearer {tokens['read']}"}).status_code == 403
    response = client.get(path, headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert response.status_code == 200
    assert "rag_http_requests_total" in response.text


def test_the_commands_compose_yaml_documents_are_real() -> None:
    """Its header's `docker compose run ... rag ARGS` lines: ARGS parse as the real CLI's, scopes
    are real, and the admin key lands in the file the Prometheus secret reads."""
    data = compose()
    header = [line.lstrip("#").strip() for line in (DEPLOY / "compose.yaml").read_text(encoding="utf-8").splitlines()
              if line.startswith("#") and "docker compose" in line]
    runs = 0
    secret_files = {(DEPLOY / s["file"]).resolve() for s in data["secrets"].values()}
    for line in header:
        tokens = shlex.split(line, comments=True)
        assert tokens[:4] == ["docker", "compose", "-f", "deploy/compose.yaml"], line
        if tokens[4] != "run":
            continue
        runs += 1
        i = 5
        while tokens[i].startswith("-"):
            i += 2 if tokens[i] in ("-v", "--volume", "-e", "--env", "-u", "--user", "-w", "--workdir") else 1
        assert tokens[i] == "rag", line
        args, redirect = tokens[i + 1:], None
        if ">" in args:
            args, redirect = args[:args.index(">")], args[args.index(">") + 1]
        _, ctx = parse_cli(args)
        if "scope" in ctx.params:
            assert ctx.params["scope"] in SCOPES
        if redirect is not None:
            assert ctx.params.get("scope") == "admin" and (REPO / redirect).resolve() in secret_files, line
    assert runs >= 2
