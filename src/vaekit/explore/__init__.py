"""`vaekit explore`: a trained run's latent space in the browser, and the JSON API the page calls.

`session` holds the library objects (`Explorer`, `ExploredRun`: loaded runs, their maps, bounded decode,
encode, sample and nearest-image calls), pure of HTTP; `server` is the Starlette app that serves them
(the optional `explore` extra: starlette, uvicorn, python-multipart); `static/` is the page.
This module imports nothing heavy.
"""
