"""Faces in pictures: YuNet detection and landmark alignment to a kit's canonical crop."""
