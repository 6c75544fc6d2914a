"""Passenger entry (cPanel "Setup Python App", Apache or nginx with Passenger): `application` is app.py's `app`.

Passenger runs this file under the Python it was told (PassengerPython). When that is not the app's
venv ($QRTRACK_VENV, else .venv beside this file), hosting.use_venv() re-executes the loader under the venv's python.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hosting  # noqa: E402 - needs this folder on sys.path

hosting.use_venv()

from app import app as application  # noqa: E402, F401 - Passenger looks for `application`
