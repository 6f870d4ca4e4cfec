"""The ``toolkit`` command line (typer): doctor, toolchain, pool, preview, run, runs, gc."""
