"""gunicorn settings picked up automatically when gunicorn starts in this folder (manage.py serve, VPS installs).

Flags on gunicorn's command line win over these; the number of workers is left to it (--workers).
"""
import gc

# Threads let one worker answer several scans at once and commit their scan rows together
# (qrtrack.scanstore.GroupCommit: one transaction and one sync for many), and keep connections
# alive between requests. bench/RESULTS.md has the figures, sync workers beside them.
worker_class = "gthread"
threads = 4


def post_worker_init(worker):
    """Load the User-Agent parsers and geo data before the first scan instead of during it (~0.3 s).

    Then move everything loaded so far out of the garbage collector's sight (gc.freeze): the app's
    ~90,000 long-lived objects are never garbage, yet every full collection walked them, about 40 ms
    each, once every few large API listings.
    """
    services = getattr(worker.wsgi, "extensions", {}).get("qrtrack")
    if services is not None:
        services.warm_up()
    gc.freeze()
