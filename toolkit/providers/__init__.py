"""Implementations of the toolkit's dynamic resources, apart from the targets that declare them.

The engine runs a dynamic resource's provider in a fresh ``pulumi-resource-pulumi-python``
plugin process per ``up`` and per ``destroy``, and that process imports the
module of the pickled provider class. Kept here, that import is the standard
library plus ``pulumi.dynamic``, instead of a target module with pydantic, the
template models and the target registry: the plugin is on the critical path of
every run (see ``toolkit/toolchain/dynamic_provider.py``).
"""
