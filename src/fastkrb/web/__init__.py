"""Negotiate for web frameworks: asgi (FastAPI, Starlette), wsgi (Flask, Django), aiohttp, and what they
share (negotiate). Each takes a Validator or a sidecar AsyncClient."""
