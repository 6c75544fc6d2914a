"""WSGI entry point: `app` for gunicorn, Passenger and `flask --app app`; as a script, serves one CGI request."""
import sys

from qrtrack import create_app
from qrtrack.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    sys.exit(f"QR Track cannot start: {error}")

if __name__ == "__main__":
    from wsgiref.handlers import CGIHandler

    CGIHandler().run(app)
