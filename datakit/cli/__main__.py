"""`python -m datakit.cli`."""

from datakit.cli import main

main()
