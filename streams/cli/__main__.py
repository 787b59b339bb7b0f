"""``python -m streams.cli``: the ``modwatch`` command."""

from streams.cli.main import main

raise SystemExit(main())
