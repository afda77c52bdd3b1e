# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A module run under the host guard: prerequisites, installed packages and the run's host lock.

One home for what ``host_lock`` does when it takes the lock, so that a module
that changes the host in one call (``execution_pool``) can guard its own run
the same way, in the same Python start: the controller side
(``plugin_utils/_host_guard.module_guard``) resolves the guard's settings and
the run's token; here the host side checks the prerequisites, reads which
packages dpkg lacks, and takes the lock (or enters the run's lock once more)
for the duration of the call.

``guard`` is the dict ``module_guard`` builds: ``prerequisites`` and
``installed`` always; ``path``, ``token``, ``owner``, ``timeout`` and
``max_hold`` when the lock is on (checked by :func:`check_guard` with the
same rules as host_lock's arguments, :func:`lock_problem`).
"""

from __future__ import annotations

import os
import sys

from ansible_collections.kvmlab.host_resources.plugins.module_utils._lock import (
    MIN_TOKEN,
    LockBusy,
    LockError,
    acquire,
    find_run,
    probe,
    read_process,
    release,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._prereq import (
    check_params,
    failure_message,
    installed_packages,
)

GUARD_KEYS = frozenset(('prerequisites', 'installed', 'path', 'token', 'owner', 'timeout', 'max_hold'))


class GuardFailed(Exception):
    """The host cannot be managed now; ``result`` holds what the guard found."""

    def __init__(self, msg, result):
        super(GuardFailed, self).__init__(msg)
        self.result = result


def lock_problem(path, token, timeout, max_hold, token_name='token'):
    """What is wrong with the lock's settings (host_lock's arguments, a guard's lock keys), or None."""
    token = token or ''
    if len(token) < MIN_TOKEN:
        return '%s must have at least %d characters (got %d)' % (token_name, MIN_TOKEN, len(token))
    if timeout < 0:
        return 'timeout must be 0 or more seconds (got %d)' % timeout
    if max_hold < 1:
        return 'max_hold must be 1 or more seconds (got %d)' % max_hold
    if not os.path.isdir(os.path.dirname(path) or '.'):
        return 'directory of the lock file %s does not exist' % path
    return None


def check_guard(guard):
    """A clear message for a malformed ``guard`` dict, or None (it is built by the action, never by hand)."""
    if not isinstance(guard, dict):
        return 'guard must be a dict, got %s' % type(guard).__name__
    unknown = sorted(set(guard) - GUARD_KEYS)
    if unknown:
        return 'guard has unknown key(s) %s' % ', '.join(unknown)
    if guard.get('path'):
        absent = [key for key in ('timeout', 'max_hold') if not isinstance(guard.get(key), int)]
        if absent:
            return 'guard with a lock path lacks %s (whole seconds)' % ', '.join(absent)
        return lock_problem(guard['path'], guard.get('token'), guard['timeout'], guard['max_hold'], 'guard token')
    return None


def check_first(guard, result, euid=None, interpreter=None, environ_path=None):
    """The prerequisites and the packages dpkg lacks, into ``result``; GuardFailed when the host cannot be managed."""
    if guard.get('prerequisites') is not None:
        found, problems = check_params(guard['prerequisites'], os.geteuid() if euid is None else euid,
                                       interpreter or sys.executable,
                                       os.environ.get('PATH') if environ_path is None else environ_path)
        result.update(found=found, missing=problems)
        if problems:
            raise GuardFailed(failure_message(problems), result)
    wanted = list(guard.get('installed') or [])
    if wanted:
        versions = installed_packages(wanted)
        result['packages'] = versions
        result['not_installed'] = (wanted if versions is None
                                   else [name for name in wanted if versions.get(name) is None])
    return result


def watch_process(watch_pid, max_hold, warn):
    """The process whose end frees the lock: ``watch_pid`` (0: none), else the run found among the ancestors."""
    if watch_pid == 0:
        return None
    if watch_pid is not None:
        info = read_process(watch_pid)
        if info is None:
            raise LockError('watch_pid %d is not a running process' % watch_pid)
        return {'pid': info['pid'], 'comm': info['comm'], 'starttime': info['starttime'], 'kind': 'given'}
    found = find_run(os.getppid(), read_process)
    if found is None:
        warn('no process found that represents this run (no sshd session or ansible-playbook among '
             'the module\'s ancestors): only max_hold (%d s) bounds the host lock' % max_hold)
    return found


def ssh_client():
    """The controller's address from the SSH session's environment, or None."""
    parts = (os.environ.get('SSH_CONNECTION') or os.environ.get('SSH_CLIENT') or '').split()
    return parts[0] if parts else None


def default_owner(client):
    return ('uid %d' % os.geteuid()) + (' from %s' % client if client else '')


def take(path, token, owner, timeout, max_hold, check_mode, warn, watch_pid=None):
    """Take the lock for ``token`` (or enter it again); in check mode only say what would happen.

    Returns host_lock's result fields (acquired, reentered, depth, waited,
    holder, watch, would). Raises LockBusy or LockError.
    """
    if check_mode:
        would, holder = probe(path, token)
        if would == 'busy':
            warn('host lock %s is held by another run (holder pid %s): a real run would wait up '
                 'to %d s' % (path, holder['pid'] if holder else 'unknown', timeout))
        return {'would': {'busy': 'wait'}.get(would, would), 'holder': holder, 'reentered': would == 'reenter'}
    watch = watch_process(watch_pid, max_hold, warn)
    client = ssh_client()
    done = acquire(path, token, owner or default_owner(client), timeout, max_hold, watch, client)
    return dict(done, watch=done['holder'].get('watch') if done['reentered'] else watch,
                would='reenter' if done['reentered'] else 'acquire')


def enter(guard, check_mode, warn):
    """Check the prerequisites, then take the lock (when ``guard`` has a path); the guard's result.

    ``not_installed`` non-empty: the packages must be installed first, so no
    lock is taken and the caller changes nothing (the action installs them
    and calls again). Raises GuardFailed.
    """
    result = {'lock': None}
    check_first(guard, result)
    if result.get('not_installed') or not guard.get('path'):
        return result
    try:
        result['lock'] = take(guard['path'], guard['token'], guard.get('owner'), guard['timeout'], guard['max_hold'],
                              check_mode, warn)
    except LockBusy as exc:
        result['lock'] = {'holder': exc.holder, 'waited': float(guard['timeout'])}
        raise GuardFailed(str(exc), result)
    except LockError as exc:
        raise GuardFailed(str(exc), result)
    except (IOError, OSError) as exc:
        raise GuardFailed('host lock %s: %s' % (guard['path'], exc), result)
    return result


def leave(guard, entered, warn):
    """Leave what ``enter`` took (nothing in check mode or without a lock); release's result or None."""
    lock = entered.get('lock') if entered else None
    if not lock or lock.get('would') not in ('acquire', 'reenter') or 'depth' not in lock:
        return None
    try:
        done = release(guard['path'], guard['token'])
    except (LockError, IOError, OSError) as exc:
        warn('host lock %s: release failed: %s (the holder frees it when the run ends)' % (guard['path'], exc))
        return None
    if not done['held']:
        warn(not_held_warning(guard['path']))
    return done


def not_held_warning(path):
    return ('host lock %s was not held by this run any more: its holder ended before the release '
            '(the run\'s connection closed, or max_hold passed)' % path)
