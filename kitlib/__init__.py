"""kitlib: the shared library of the image-classification competition kit."""

__version__ = "0.1.0"
