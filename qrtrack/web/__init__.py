"""Everything that speaks HTTP: the API, the public scan and image answers, the lean fast path and the dashboard.

Importing it is cheap on purpose: fastpath.py, under it, is imported by every CGI scan.
"""
