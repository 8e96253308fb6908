"""HTTP front ends over the client library: the demo page and the annotation-platform adapters.

They share one web framework (Flask, served by waitress) and one bounded session cache
(:mod:`clickmask.web.session_cache`). They talk to Triton only through ``clickmask.client``.
"""
