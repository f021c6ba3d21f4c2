"""``python -m openami.cli``."""

from openami.cli import main

main()
