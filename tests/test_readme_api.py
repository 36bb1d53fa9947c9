"""The README's API table lists exactly the endpoints the app registers, each with its arguments in order and their
defaults, as gradio_client sees them (the app's API info)."""

import ast
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
ARGUMENT = re.compile(r"`([a-z_]+)(?:=([^`]+))?`")


def readme_endpoints() -> dict[str, list[tuple[str, object]]]:
    """{endpoint: [(argument, default or ...), ...]} from the table under the README's "## API" heading."""
    section = README.read_text(encoding="utf-8").split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("| endpoint | arguments | returns |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    endpoints = {}
    for line in table.splitlines():
        name, arguments = [cell.strip() for cell in line.strip("|").split("|")[:2]]
        assert re.fullmatch(r"`[a-z_]+`", name), f"one endpoint per row, in backticks: {line}"
        assert name.strip("`") not in endpoints, f"{name} is listed twice"
        parsed = [] if arguments == "—" else [(a, ast.literal_eval(d) if d else ...) for a, d in ARGUMENT.findall(arguments)]
        assert arguments == "—" or ", ".join(f"`{a}`" if d is ... else f"`{a}={d!r}`".replace("'", '"')
                                             for a, d in parsed) == arguments, f"only the arguments, in backticks: {line}"
        endpoints[name.strip("`")] = parsed
    return endpoints


def registered_endpoints(workspace: Path) -> dict[str, list[tuple[str, object]]]:
    from studio.app import build_app

    info = build_app(workspace).get_api_info()["named_endpoints"]
    return {name.lstrip("/"): [(p["parameter_name"], p["parameter_default"] if p["parameter_has_default"] else ...)
                               for p in endpoint["parameters"]] for name, endpoint in info.items()}


def test_the_readme_lists_exactly_the_registered_endpoints_with_their_arguments(tmp_path):
    documented, registered = readme_endpoints(), registered_endpoints(tmp_path)
    assert sorted(documented) == sorted(registered), "README and app differ in which endpoints exist"
    for name, arguments in registered.items():
        assert documented[name] == arguments, f"{name}: the README says {documented[name]}, the app takes {arguments}"


def test_every_endpoint_is_an_api_function_with_its_own_docstring(tmp_path):
    from pipelines import api

    registered = registered_endpoints(tmp_path)
    assert [fn.__name__ for fn in api.ENDPOINTS] == list(registered), "registered in api.py's order, one each"
    for fn in api.ENDPOINTS:
        assert fn.__doc__ and fn.__doc__.strip(), f"{fn.__name__} says what it does and returns"
        assert [name for name, _ in registered[fn.__name__]] == list(fn.__code__.co_varnames[1:fn.__code__.co_argcount])
