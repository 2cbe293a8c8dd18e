"""The HTTP translation service (FastAPI). Built by the service issue; empty until then."""
