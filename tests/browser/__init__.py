"""Helpers of the browser check (``make test-browser``): Chromium install and a tiny store."""
