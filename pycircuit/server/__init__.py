"""The per-host server: the anchor tree (``_anchors``, pure) and the server
with its ``circuit`` kernel service (``_server``)."""
