"""The `credits` command (driving side): `main()` is its entry point.

- `main`: the Typer app and the reading and operating commands;
- `demo`, `story`, `replay`: `credits demo`, its scripted story and its replay;
- `serve`: `credits keys ...` and `credits serve` (the HTTP API, with the `http` extra);
- `render`, `support`: tables, and what every command shares (options, errors, wiring).
"""


def main() -> None:
    from adapters.cli.main import run

    run()
