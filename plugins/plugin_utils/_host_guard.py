# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host_guard action's decisions (controller side): its settings, the module calls it makes, the run token.

Plain functions, unit-tested: what :mod:`plugins.action.host_guard` runs is
planned here and only executed there.
"""

from __future__ import annotations

import hashlib
import os

#: the inventory variables that set the guard for every role at once, and their defaults
INVENTORY_DEFAULTS = (
    ('install_packages', 'kvmlab_install_packages', True),
    ('lock', 'kvmlab_host_lock', True),
    ('lock_path', 'kvmlab_host_lock_path', '/run/lock/kvmlab-host-resources.lock'),
    ('lock_timeout', 'kvmlab_host_lock_timeout', 300),
    ('lock_max_hold', 'kvmlab_host_lock_max_hold', 3600),
)

ARGUMENTS = {
    'state': ('str', 'acquired'),
    'owner': ('str', None),
    'inputs': ('dict', {}),
    'packages': ('list', []),
    'python_modules': ('list', []),
    'executables': ('list', []),
    'systemd': ('bool', True),
    'cgroup_controllers': ('list', ['cpu', 'cpuset']),
    'install_packages': ('bool', None),
    'lock': ('bool', None),
    'lock_path': ('str', None),
    'lock_timeout': ('int', None),
    'lock_max_hold': ('int', None),
}

_TRUE = ('1', 'true', 'yes', 'on', 'y', 't')
_FALSE = ('0', 'false', 'no', 'off', 'n', 'f')


class GuardError(ValueError):
    """A host_guard argument or kvmlab_* variable that cannot be used."""


def _bool(name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise GuardError('%s must be a boolean, got %r' % (name, value))


def _int(name, value):
    if isinstance(value, bool):
        raise GuardError('%s must be a whole number of seconds, got %r' % (name, value))
    try:
        number = int(str(value).strip())
    except ValueError:
        raise GuardError('%s must be a whole number of seconds, got %r' % (name, value))
    if number < 0:
        raise GuardError('%s must not be negative, got %d' % (name, number))
    return number


def _list(name, value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item for item in value):
        raise GuardError('%s must be a list of names, got %r' % (name, value))
    return list(value)


def _convert(name, kind, value):
    if kind == 'bool':
        return _bool(name, value)
    if kind == 'int':
        return _int(name, value)
    if kind == 'list':
        return _list(name, value)
    if kind == 'dict':
        if not isinstance(value, dict):
            raise GuardError('%s must be a mapping, got %r' % (name, value))
        return value
    if value is not None and not isinstance(value, str):
        raise GuardError('%s must be a string, got %r' % (name, value))
    return value


def settings(args, variables):
    """The guard's settings from the task's ``args`` and, for what they leave out, the kvmlab_* ``variables``.

    Raises :class:`GuardError` naming the argument (or variable) that is wrong.
    """
    unknown = sorted(set(args) - set(ARGUMENTS))
    if unknown:
        raise GuardError('unsupported argument%s: %s (supported: %s)'
                         % ('s' if len(unknown) > 1 else '', ', '.join(unknown), ', '.join(sorted(ARGUMENTS))))
    out = {}
    for name, (kind, default) in ARGUMENTS.items():
        value = args.get(name)
        if value is None:
            value = default
        out[name] = None if value is None else _convert(name, kind, value)
    if out['state'] not in ('acquired', 'released'):
        raise GuardError('state must be acquired or released, got %r' % out['state'])
    for name, variable, default in INVENTORY_DEFAULTS:
        if out[name] is None:
            value = variables.get(variable, default)
            kind = ARGUMENTS[name][0]
            out[name] = _convert(variable, kind, default if value is None else value)
    if not out['lock_path']:
        raise GuardError('lock_path must not be empty')
    return out


def prerequisites_args(conf):
    """The host_prerequisites call: what must be there (what the install step brings is not required yet)."""
    installing = conf['install_packages'] and bool(conf['packages'])
    return {
        'systemd': conf['systemd'],
        'cgroup2': conf['systemd'],
        'cgroup_controllers': conf['cgroup_controllers'] if conf['systemd'] else [],
        'python_modules': [] if installing else conf['python_modules'],
        'executables': conf['executables'],
    }


def install_args(conf, check_mode, not_installed=None):
    """The ansible.builtin.apt call (Debian and Ubuntu package names), or None when nothing is to be installed.

    ``not_installed``: the packages the host's dpkg database lacks (host_lock's
    RV(not_installed)); when known, only those are installed, and none means no
    apt call at all (apt would find them present and change nothing).
    """
    if not conf['install_packages'] or not conf['packages'] or check_mode:
        return None
    names = conf['packages'] if not_installed is None else [name for name in conf['packages'] if name in not_installed]
    if not names:
        return None
    return {'name': names, 'state': 'present'}


def lock_args(conf, token, owner_user):
    """The host_lock call for ``conf['state']``, or None when the lock is off.

    With V(acquired) the same call checks the prerequisites first and reads
    which of the packages are installed (one Python start on the host instead
    of three: the guard runs at every entry point).
    """
    if not conf['lock']:
        return None
    if conf['state'] == 'released':
        return {'path': conf['lock_path'], 'state': 'released', 'token': token}
    return {'path': conf['lock_path'], 'state': 'acquired', 'token': token,
            'owner': '%s: %s' % (owner_user or '?', conf['owner'] or 'kvmlab.host_resources'),
            'timeout': conf['lock_timeout'], 'max_hold': conf['lock_max_hold'],
            'prerequisites': prerequisites_args(conf), 'installed': list(conf['packages'])}


def controller_user():
    """Who runs the playbook (USER, else the name of the uid), for the lock's owner line."""
    name = os.environ.get('USER') or os.environ.get('LOGNAME')
    if name:
        return name
    try:
        import pwd  # pylint: disable=import-outside-toplevel
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return 'uid %d' % os.getuid()


def process_start(pid, proc_root='/proc'):
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(os.path.join(proc_root, str(pid), 'stat')) as handle:
            text = handle.read()
    except (IOError, OSError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces or parentheses
    fields = text[text.rfind(')') + 2:].split()
    return fields[19] if len(fields) > 19 else None


def run_token(main_pid, proc_root='/proc'):
    """One token per playbook run, the same in every worker: the main process's pid and start time.

    Action plugins run in worker processes forked from the main
    ``ansible-playbook`` process; its pid and start time name the run
    (a reused pid has another start time). ``run-PID-`` and 20 hex digits of
    their SHA-256 (host_lock wants at least 16 characters).
    """
    start = process_start(main_pid, proc_root)
    digest = hashlib.sha256(('%d:%s' % (main_pid, start or 'unknown')).encode('ascii')).hexdigest()
    return 'run-%d-%s' % (main_pid, digest[:20])


def install_packages(call, install):
    """apt with ``install`` (install_args' call) through ``call(name, args)``; (apt's result, failure message or None)."""
    installed = call('ansible.builtin.apt', install)
    if installed.get('failed'):
        return installed, 'cannot install %s: %s' % (', '.join(install['name']), installed.get('msg', 'package failed'))
    return installed, None


def module_guard(conf, token, owner_user, check_mode):
    """The ``guard`` argument of a module that guards its own call (execution_pool), from the guard's settings.

    host_lock's arguments without ``state`` when the lock is on, else the
    prerequisites alone. ``installed`` (the packages whose absence stops the
    module before it changes anything, so that the action installs them and
    calls again) only when this run would install them: otherwise a missing
    package is left to the prerequisites, as with the guard task.
    """
    conf = dict(conf, state='acquired')
    guard = lock_args(conf, token, owner_user) or {'prerequisites': prerequisites_args(conf)}
    guard.pop('state', None)
    guard['installed'] = list(conf['packages']) if conf['install_packages'] and not check_mode else []
    return guard


def run_guarded(call, module, args, conf, check_mode):
    """Call ``module`` with ``args`` (its ``guard`` resolved); install what it stopped for, then call it again.

    ``call(name, args)`` executes a module on the host and returns its
    result. The module stops before it changes anything when this run's
    packages are missing (RV(guard.not_installed)); apt installs them and the
    module runs once more. Returns the module's result (failed, with a
    message naming the packages, when apt fails or leaves them missing).
    """
    out = call(module, args)
    missing = (out.get('guard') or {}).get('not_installed')
    if not missing or out.get('failed'):
        return out
    install = install_args(conf, check_mode, missing)
    if install is None:  # not this run's to install: the module would not have stopped
        return dict(out, failed=True, msg='%s stopped for packages it may not install: %s'
                    % (module, ', '.join(missing)))
    installed, failure = install_packages(call, install)
    if failure:
        return {'failed': True, 'changed': False, 'packages': installed, 'msg': failure}
    out = call(module, args)
    still = (out.get('guard') or {}).get('not_installed')
    if still and not out.get('failed'):
        out = dict(out, failed=True, msg='apt installed nothing of %s: dpkg still lacks %s'
                   % (', '.join(install['name']), ', '.join(still)))
    if isinstance(out.get('guard'), dict):
        out['guard']['installed'] = installed
    out['changed'] = bool(out.get('changed')) or bool(installed.get('changed'))
    return out
