"""``toolkit ui``: a local dashboard over what the toolkit records, in a browser.

Runs (live, filtered, paged on the server), a run (phase timeline, resources,
layered job variables, policy verdicts, live logs, a map's Gantt and items),
pools, leaked stacks and environments; actions (cancel, gc, prune) confirmed
and audited. Its packages are the ``toolkit[ui]`` extra.

Modules: ``adapter`` is the one door into the rest of the toolkit; ``catalog``
keeps every run in memory; ``journal`` reads a map's item journal; ``details``
assembles a run's page; ``pictures`` lays out the timeline, Gantt and resource
tree; ``security`` guards requests; ``app`` is the web app; ``server`` starts it.
"""

INSTALL_HINT = "pip install 'toolkit[ui]'"
