"""``python -m cloud_stub``: the same as ``edge-cloud``."""

from cloud_stub.cli import main

main()
