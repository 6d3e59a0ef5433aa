"""Scale-out: ``handanno fit`` over many sessions and long captures on a Ray cluster (:mod:`.ray_fit`).

Nothing here imports Ray until a sharded run is asked for; Ray is the optional extra
``pip install 'handanno[ray]'``. See docs/scale.md.
"""
