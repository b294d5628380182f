"""``python -m vapl ARGS`` is the ``vapl`` command."""

from vapl.command import main

main()
