"""gunicorn settings picked up automatically when gunicorn starts in this folder (manage.py serve, VPS installs).

Flags on gunicorn's command line win over these; the number of workers is left to it (--workers).
"""
import gc

# Workers are gunicorn's sync ones, one request at a time each, deliberately: on a 2-core machine
# they served 20-40 % more scans/s than gthread workers with 4 threads, at about 0.6x the p99 (bench/RESULTS.md,
# cases scan and scan-threads). Threads let group commit share a transaction among
# concurrent scans, but their switching (the GIL, which each SQLite call releases) cost more CPU
# per scan than that saved. Set `threads` here to serve with gthread workers instead.

# gunicorn 27's control socket (for gunicornc) goes in the user's home, which the VPS unit keeps
# read-only (ProtectSystem=strict), so every start logged an error; systemctl reload does its job.
control_socket_disable = True


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
    worker.log.info("QR Track worker %s ready (gunicorn.conf.py)", worker.pid)
