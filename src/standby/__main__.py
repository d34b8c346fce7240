"""``python -m standby``: the same as the ``standby`` command."""

from standby.cli.main import main

main()
