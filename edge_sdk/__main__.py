"""``python -m edge_sdk`` runs the ``edge-sdk`` command line."""

from edge_sdk.cli import main

if __name__ == "__main__":
    main()
