"""``python -m svcbridge`` runs the CLI (handy under a profiler: ``python -m cProfile -m svcbridge``)."""

from .cli import main

main()
