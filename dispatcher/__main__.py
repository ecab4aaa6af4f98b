"""``python -m dispatcher`` runs ``tenantctl``."""

from dispatcher.cli import main

main()
