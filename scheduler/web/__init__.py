"""`newsmon serve`: the HTTP JSON API, the web page and /metrics (FastAPI under uvicorn)."""
