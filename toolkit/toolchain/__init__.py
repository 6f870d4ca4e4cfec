"""The toolchain: Pulumi CLI, plugins, Docker engine and runner image, built offline.

Nothing is downloaded at run time. Where a user already has the Pulumi CLI and
plugins, they are used as they are; where not, they are built from the Go
module proxy at exactly the versions of the installed Python packages and
cached under ``~/.cache/toolkit`` (see ``install.py``; ``doctor.py`` reports).
"""
