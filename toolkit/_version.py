"""The toolkit's version, in one place: pyproject's dynamic version, ``toolkit.__version__`` and the runner image tag.

Its own module so that targets, settings and the job side can read it without
importing the package face (``toolkit/__init__.py``).
"""

__version__ = "0.1.0"
