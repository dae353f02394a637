"""The HTTP service's front (issue 12): API keys first; the routes translate to and from Engine."""
