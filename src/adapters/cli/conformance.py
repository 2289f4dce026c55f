"""`credits conformance BASE_URL`: check a whole service over HTTP, as a black box.

Runs the state machine of `credits_domain.testing.http` against a server in test mode
(`credits serve --test-mode`, or another implementation of the API and its test routes):
a bounded number of examples of bounded length, derandomized unless `--seed` is given, with
a progress bar on stderr (on a terminal). Exit 0 when every answer was the one the rules
predict; exit 1 with the shrunk failing sequence of steps on standard output otherwise.
Needs the `testing` extra (hypothesis), imported when the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapters.cli.support import fail
from credits_domain import CreditsError

MAX_EXAMPLES = 10_000
MAX_STEPS = 200


def conformance(
    base_url: Annotated[
        str,
        typer.Argument(
            metavar="BASE_URL",
            help="The server to check, in test mode, e.g. http://127.0.0.1:8000.",
        ),
    ],
    examples: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, max=MAX_EXAMPLES, help=f"Run N examples (1 to {MAX_EXAMPLES:,})."
        ),
    ] = 25,
    steps: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1,
            max=MAX_STEPS,
            help=f"At most N steps per example (1 to {MAX_STEPS}).",
        ),
    ] = 20,
    seed: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=0,
            max=2**32 - 1,
            help="Draw the examples from this seed (default: the same examples every run).",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0.1, max=600, help="Wait at most SECONDS per request."),
    ] = 10.0,
    shrink_seconds: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=1,
            max=3600,
            help="Stop shrinking a failure after SECONDS (it is printed as far as shrunk).",
        ),
    ] = 60.0,
) -> None:
    """Check a service over HTTP against the rules: exit 0 if it conforms.

    The server must be in test mode (`credits serve --test-mode`): each example makes two
    sandbox accounts and drives them through every route, predicting each answer with
    the reference model. On a failure, the shortest failing sequence of steps found is
    printed, and the exit status is 1."""
    from credits_domain.testing.http import run_conformance  # the `testing` extra

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("examples"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,  # a log or a pipe gets the summary only
        redirect_stdout=False,
    )
    started = 0
    with progress:
        task = progress.add_task("conformance", total=examples)

        def on_example() -> None:
            nonlocal started
            started += 1
            if started > examples:  # Hypothesis replays a failure, or shrinks it
                progress.update(task, description="replaying, shrinking")
            progress.update(task, completed=min(started, examples))

        try:
            result = run_conformance(
                base_url,
                max_examples=examples,
                max_steps=steps,
                seed=seed,
                timeout_s=timeout,
                shrink_s=shrink_seconds,
                on_example=on_example,
            )
        except CreditsError as exc:  # InvalidRequest: a base URL that is not one
            fail(str(exc))
    drawn = "derandomized" if seed is None else f"seed {seed}"
    if result.passed:
        typer.echo(
            f"credits: {base_url} conforms: {min(started, examples)} examples of up to "
            f"{steps} steps ({drawn})",
            err=True,
        )
        return
    typer.echo(result.report)
    fail(f"{base_url} does not conform; the failing steps are above ({drawn})")
