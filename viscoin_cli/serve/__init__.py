"""`viscoin serve`: a local interactive explorer of a trained concept model.

`explorer` holds the model-side work (encode a source once, explain it, render a slider state); `server`
is the HTTP layer (routes, validation, limits) over the standard library's ThreadingHTTPServer; `static/`
holds the page, served by a fixed name table.
"""
