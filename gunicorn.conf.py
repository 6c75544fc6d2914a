"""gunicorn settings picked up automatically when gunicorn starts in this folder (manage.py serve, VPS installs)."""


def post_worker_init(worker):
    """Load the User-Agent parsers and geo data before the first scan instead of during it (~0.3 s)."""
    services = getattr(worker.wsgi, "extensions", {}).get("qrtrack")
    if services is not None:
        services.warm_up()
