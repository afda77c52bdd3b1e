# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection's modules talk to libvirt.

Owns the optional-library guard (:data:`HAS_LIBVIRT`, :func:`require`),
opening and closing a connection (:func:`connection`, which also stops
libvirt printing its own errors to stderr) and the translation of
``libvirtError`` into messages that carry libvirt's text and error code
(:func:`describe`, :func:`lookup_domain`). Modules pass the ``libvirt``
module object in (``lib``), so unit tests can hand in a fake.
"""

from __future__ import annotations

import contextlib
import traceback

LIBVIRT_IMPORT_ERROR = None
try:
    import libvirt  # noqa: F401  pylint: disable=unused-import
    HAS_LIBVIRT = True
except ImportError:
    libvirt = None
    HAS_LIBVIRT = False
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()

#: The Python package the modules need on the managed host.
REQUIREMENT = 'libvirt-python'
#: VIR_ERR_NO_DOMAIN: the only lookup error that means "no such domain".
ERR_NO_DOMAIN = 42
# VIR_ERR_NONE/WARNING/ERROR are error *levels* that share numbers with codes
_LEVEL_NAMES = ('VIR_ERR_NONE', 'VIR_ERR_WARNING', 'VIR_ERR_ERROR')


class LibvirtConnError(Exception):
    """A connection or lookup failure; the message names the URI or domain and libvirt's error."""


def require(module, lib):
    """Fail the module with Ansible's missing-library message when ``lib`` is None."""
    if lib is None:
        from ansible.module_utils.basic import missing_required_lib  # the module face's import
        module.fail_json(msg=missing_required_lib(REQUIREMENT), exception=LIBVIRT_IMPORT_ERROR)


def silence(lib):
    """Stop libvirt printing every error to stderr (the module reports them)."""
    try:
        lib.registerErrorHandler(lambda *args: None, None)
    except Exception:  # pylint: disable=broad-except
        pass


def error_message(exc):
    """libvirt's text of an error (``get_error_message``), else ``str(exc)``."""
    try:
        return exc.get_error_message() or str(exc)
    except Exception:  # pylint: disable=broad-except
        return str(exc)


def error_code(exc):
    """libvirt's error code (``get_error_code``) or None."""
    try:
        code = exc.get_error_code()
    except Exception:  # pylint: disable=broad-except
        return None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def error_code_name(code, lib=None):
    """The ``VIR_ERR_*`` name of a code, from the libvirt module; None when unknown."""
    lib = lib if lib is not None else libvirt
    if code is None or lib is None:
        return None
    for name in sorted(dir(lib)):
        if name.startswith('VIR_ERR_') and name not in _LEVEL_NAMES and getattr(lib, name, None) == code:
            return name
    return None


def describe(exc, lib=None):
    """``text (libvirt error CODE, VIR_ERR_NAME)``: what a message should say about a libvirtError."""
    text = error_message(exc)
    code = error_code(exc)
    if code is None:
        return text
    name = error_code_name(code, lib)
    return '%s (libvirt error %d%s)' % (text, code, ', %s' % name if name else '')


def is_no_domain(exc):
    """True when the error is VIR_ERR_NO_DOMAIN (and nothing else)."""
    return error_code(exc) == ERR_NO_DOMAIN


@contextlib.contextmanager
def connection(lib, uri, error=LibvirtConnError):
    """``with connection(libvirt, uri, MyError) as conn:`` opens, yields and always closes.

    Silences libvirt's stderr printing first. A failed open raises ``error``
    with a message naming the URI and libvirt's error.
    """
    silence(lib)
    try:
        conn = lib.open(uri)
    except lib.libvirtError as exc:
        raise error('cannot connect to libvirt at uri "%s": %s' % (uri, describe(exc, lib)))
    if conn is None:
        raise error('cannot connect to libvirt at uri "%s"' % uri)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:  # pylint: disable=broad-except
            pass


def lookup_domain(lib, conn, name, uri, error=LibvirtConnError):
    """The domain called ``name``, or None when libvirt says there is no such domain.

    Any other lookup error (connection dropped, access denied, ...) raises
    ``error`` saying what it is, never "not found".
    """
    try:
        return conn.lookupByName(name)
    except lib.libvirtError as exc:
        if is_no_domain(exc):
            return None
        raise error('domain "%s": lookup at uri "%s" failed: %s' % (name, uri, describe(exc, lib)))
