#!/usr/bin/env python3
"""Stand-in for ansible-test's pip bootstrap script on machines without its download host.

ansible-test runs ``python get_pip_X_Y.py <pip options> pip==X.Y`` inside each
fresh virtual environment it makes. The machines this project runs on reach
PyPI but not that host, so this script bootstraps pip with the interpreter's
own ``ensurepip`` and then installs the requested packages from PyPI.
``make ansible-test-bootstrap`` puts it where ansible-test looks for its cache.
"""
import subprocess
import sys

IGNORED = ('--no-setuptools', '--no-wheel')

subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + [arg for arg in sys.argv[1:] if arg not in IGNORED])
