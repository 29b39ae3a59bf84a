"""``pbkv dashboard``: watch a cluster live in a browser, and break it from the page.

``source`` reads snapshots (view, nodes, timeline, throughput) through the cluster layer and the
view service's status; ``server`` serves one page and pushes snapshots by server-sent events;
``actions`` turns the page's buttons into the cluster layer's faults. The page and its script
are in ``static/`` and ship in the package (no CDN): it works with no network at all.
"""
