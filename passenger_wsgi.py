"""Passenger entry (cPanel "Setup Python App", Apache or nginx with Passenger): `application` serves app.py's `app`.

Passenger runs this file under the Python it was told (PassengerPython). When that is not the app's
venv ($QRTRACK_VENV, else .venv beside this file), hosting.use_venv() re-executes the loader under the venv's python.
Passenger starts a process when a request arrives and none is running: a scan is then answered without
waiting the second the full app takes to load (qrtrack.web.fastpath.lean_until_loaded).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hosting  # noqa: E402 - needs this folder on sys.path

hosting.use_venv()

from qrtrack.web.fastpath import lean_until_loaded  # noqa: E402

application = lean_until_loaded(hosting.load_app)  # Passenger looks for `application`
