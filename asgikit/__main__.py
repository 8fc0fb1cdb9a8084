"""``python -m asgikit``: the ``asgikit`` command."""

from asgikit.cli import main

raise SystemExit(main())
