"""The toolchain: Pulumi CLI, plugins, Docker engine and runner image.

What the user has is used as it is: any Pulumi CLI the ``pulumi`` SDK supports
(``cli_lookup.py``) and plugins downloaded the normal Pulumi way
(``plugins.py``). Only offline (``offline.py``) does the toolkit build what is
missing from the Go module proxy, cached under ``~/.cache/toolkit``
(``install.py`` runs the steps; ``doctor.py`` reports).
"""
