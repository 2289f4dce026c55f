"""`python -m adapters.cli ...` runs the `credits` command."""

from adapters.cli import main

main()
