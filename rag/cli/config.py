"""`rag config`: the effective settings and where each one came from."""

from __future__ import annotations

import json

from rich.markup import escape

from rag.cli.common import JsonOpt, load_settings, out, print_json


def show_config(json_out: JsonOpt = False) -> None:
    """Print the effective settings and where each one came from."""
    from rag.config import env_var_name, settings_as_flat_dict

    settings, origins = load_settings({})
    flat = settings_as_flat_dict(settings)
    if json_out:
        print_json({key: {"value": value, "source": str(origins[key]), "env": env_var_name(key)}
                    for key, value in flat.items()})
        return
    width = max(len(k) for k in flat)
    for key, value in flat.items():
        out.print(f"{key:<{width}}  {escape(json.dumps(value, ensure_ascii=False))}  [dim]# {escape(str(origins[key]))}[/]")
