# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this host be managed? Read-only checks, one message naming everything missing.

``check_host()`` reads a host tree under ``root`` (``/`` on a real host, a
fixture tree in tests) and returns what it found plus a list of problems;
``failure_message()`` joins them into the one message the module fails with.
The Python-module and euid checks take their inputs as arguments so that
tests decide them.

cgroup v2 semantics used here:

- the unified hierarchy is mounted at /sys/fs/cgroup when the mount table says
  ``cgroup2`` there (a hybrid layout has tmpfs there and cgroup2 at
  /sys/fs/cgroup/unified); without a readable mount table, the presence of
  /sys/fs/cgroup/cgroup.controllers decides (only cgroup2 has it);
- a controller is *available* when the root cgroup's ``cgroup.controllers``
  lists it: that is what systemd can enable for slices (it writes
  ``cgroup.subtree_control`` itself when a unit needs the controller, for
  example cpuset once AllowedCPUs= is set), so ``cgroup.subtree_control``
  is reported as *enabled* and not required;
- a controller missing from ``cgroup.controllers`` is explained from
  /proc/cgroups: bound to a cgroup v1 hierarchy (hierarchy id not 0),
  disabled at boot (``cgroup_disable=``), or unknown to this kernel.
"""

from __future__ import annotations

import importlib
import os

DEFAULT_CONTROLLERS = ('cpu', 'cpuset')
DEFAULT_PATH = ('/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin')

# The options of host_prerequisites, also host_lock's O(prerequisites): one
# home for their defaults (check_params fills what a caller leaves out).
ARGUMENT_SPEC = dict(
    systemd=dict(type='bool', default=True),
    cgroup2=dict(type='bool', default=True),
    cgroup_controllers=dict(type='list', elements='str', default=list(DEFAULT_CONTROLLERS)),
    root_user=dict(type='bool', default=True),
    python_modules=dict(type='list', elements='str', default=[]),
    executables=dict(type='list', elements='str', default=[]),
    search_path=dict(type='list', elements='path'),
    packages=dict(type='dict', default={}),
    root=dict(type='path', default='/'),
)

# Debian / Ubuntu package that provides a Python module or an executable
PACKAGES = {
    'libvirt': 'python3-libvirt',
    'lxml': 'python3-lxml',
    'yaml': 'python3-yaml',
    'zramctl': 'util-linux',
    'swapon': 'util-linux',
    'swapoff': 'util-linux',
    'mkswap': 'util-linux',
    'systemctl': 'systemd',
    'systemd-run': 'systemd',
    'virsh': 'libvirt-clients',
    'modprobe': 'kmod',
    'udevadm': 'udev',
    'zram-generator': 'systemd-zram-generator',
}


def _read(path):
    """File text with trailing NULs and whitespace removed, or None when it cannot be read."""
    try:
        with open(path, 'r') as handle:
            return handle.read().rstrip('\0 \n\t')
    except (IOError, OSError, UnicodeDecodeError):
        return None


def _under(root, path):
    return os.path.join(root, path.lstrip('/'))


def parse_mounts(text):
    """/proc/self/mounts (or /proc/mounts) -> {mount point: fstype}; the last mount on a point wins."""
    mounts = {}
    for line in (text or '').splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts[fields[1].replace('\\040', ' ')] = fields[2]
    return mounts


def parse_proc_cgroups(text):
    """/proc/cgroups -> {controller: {'hierarchy': int, 'enabled': bool}}."""
    found = {}
    for line in (text or '').splitlines():
        if line.startswith('#'):
            continue
        fields = line.split()
        if len(fields) >= 4 and fields[1].isdigit() and fields[3].isdigit():
            found[fields[0]] = {'hierarchy': int(fields[1]), 'enabled': fields[3] != '0'}
    return found


def check_systemd(root):
    """PID 1 is systemd: its comm is ``systemd``, or /run/systemd/system exists (sd_booted())."""
    comm = _read(_under(root, '/proc/1/comm'))
    booted = os.path.isdir(_under(root, '/run/systemd/system'))
    found = {'pid1': comm, 'run_systemd_system': booted, 'ok': comm == 'systemd' or booted}
    problems = []
    if not found['ok']:
        problems.append('PID 1 is not systemd (it is %r)' % comm if comm is not None
                        else 'PID 1 is not systemd (/proc/1/comm unreadable, no /run/systemd/system)')
    return found, problems


def check_cgroup(root, controllers):
    """cgroup v2 at /sys/fs/cgroup with ``controllers`` available in the root cgroup."""
    base = _under(root, '/sys/fs/cgroup')
    mounts_text = _read(_under(root, '/proc/self/mounts'))
    if mounts_text is None:
        mounts_text = _read(_under(root, '/proc/mounts'))
    mounts = parse_mounts(mounts_text) if mounts_text is not None else None
    fstype = mounts.get('/sys/fs/cgroup') if mounts is not None else None
    listed = _read(os.path.join(base, 'cgroup.controllers'))
    unified = fstype == 'cgroup2' if fstype is not None else listed is not None
    found = {'mount': fstype, 'unified': unified, 'available': [], 'enabled': [], 'missing': []}
    problems = []
    if not unified:
        where = [point for point, kind in sorted((mounts or {}).items()) if kind == 'cgroup2']
        if mounts is None:
            what = 'there is no cgroup.controllers'
        else:
            what = 'it is %s' % (fstype or 'not mounted')
        problems.append('/sys/fs/cgroup is not the cgroup v2 unified hierarchy (%s%s)'
                        % (what, '; cgroup2 is mounted at %s' % ', '.join(where) if where else ''))
        found['missing'] = list(controllers)
        return found, problems
    if listed is None:
        problems.append('cannot read %s' % os.path.join('/sys/fs/cgroup', 'cgroup.controllers'))
        found['missing'] = list(controllers)
        return found, problems
    available = listed.split()
    found['available'] = available
    found['enabled'] = (_read(os.path.join(base, 'cgroup.subtree_control')) or '').split()
    kernel = parse_proc_cgroups(_read(_under(root, '/proc/cgroups')))
    for name in controllers:
        if name in available:
            continue
        found['missing'].append(name)
        state = kernel.get(name)
        if state is None:
            why = ''
        elif not state['enabled']:
            why = ', disabled at boot (cgroup_disable= on the kernel command line?)'
        elif state['hierarchy'] != 0:
            why = ', bound to a cgroup v1 hierarchy'
        else:
            why = ''
        problems.append('cgroup v2 controller %s is not available (have: %s)%s'
                        % (name, ' '.join(available) or 'none', why))
    return found, problems


def check_root(euid):
    found = {'euid': euid, 'ok': euid == 0}
    return found, ([] if euid == 0 else ['not running as root (euid %d): use become' % euid])


def find_executable(name, root, search):
    """Absolute path (as seen on the host) of an executable ``name`` in ``search``, or None."""
    if '/' in name:
        candidates = [name]
    else:
        candidates = [os.path.join(folder, name) for folder in search]
    for candidate in candidates:
        real = _under(root, candidate)
        if os.path.isfile(real) and os.access(real, os.X_OK):
            return candidate
    return None


def hint(name, packages):
    package = packages.get(name, PACKAGES.get(name))
    return ' (install %s)' % package if package else ''


def check_executables(names, root, search, packages):
    found, problems = {}, []
    for name in names:
        found[name] = find_executable(name, root, search)
        if found[name] is None:
            problems.append('executable %s not found%s' % (name, hint(name, packages)))
    return found, problems


def check_python(names, importable, interpreter, packages):
    """``importable(name)`` returns None when the module imports, else the error text."""
    found, problems = {}, []
    for name in names:
        error = importable(name)
        found[name] = {'ok': error is None, 'error': error}
        if error is not None:
            problems.append('Python module %s missing for %s%s%s'
                            % (name, interpreter, hint(name, packages),
                               '' if error.startswith('No module named') else ': %s' % error))
    return found, problems


def check_host(root='/', require_systemd=True, require_cgroup2=True, controllers=DEFAULT_CONTROLLERS,
               require_root=True, euid=0, executables=(), search=DEFAULT_PATH, python_modules=(),
               importable=None, interpreter='python', packages=None):
    """Everything at once: (found, problems). Nothing is changed."""
    packages = packages or {}
    found, problems = {}, []
    if require_systemd:
        found['systemd'], more = check_systemd(root)
        problems += more
    if require_cgroup2:
        found['cgroup'], more = check_cgroup(root, list(controllers))
        problems += more
    if require_root:
        found['root'], more = check_root(euid)
        problems += more
    found['executables'], more = check_executables(list(executables), root, list(search), packages)
    problems += more
    found['python_modules'], more = check_python(list(python_modules), importable or (lambda name: None),
                                                 interpreter, packages)
    problems += more
    return found, problems


def parse_dpkg_status(text, names):
    """The installed version of each of ``names`` from dpkg's status file text (None when not installed).

    A package counts as installed when its ``Status`` is ``install ok installed``
    (what ``apt install`` leaves; ``deinstall ok config-files`` and half-installed
    states do not count). Stanzas are separated by empty lines; an architecture
    qualifier (``name:amd64``) in ``names`` matches the stanza's Architecture.
    """
    wanted = dict((name, None) for name in names)
    for stanza in text.split('\n\n'):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] in (' ', '\t') or ':' not in line:
                continue
            key, value = line.split(':', 1)
            fields[key.strip().lower()] = value.strip()
        name = fields.get('package')
        if not name or fields.get('status', '').split() != ['install', 'ok', 'installed']:
            continue
        for key in (name, '%s:%s' % (name, fields.get('architecture', ''))):
            if key in wanted:
                wanted[key] = fields.get('version') or ''
    return wanted


def installed_packages(names, root='/'):
    """``parse_dpkg_status`` on the host's /var/lib/dpkg/status; None when the host has no dpkg database."""
    if not names:
        return {}
    try:
        with open(os.path.join(root, 'var/lib/dpkg/status'), 'r') as handle:
            text = handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return None
    return parse_dpkg_status(text, list(names))


def importable(name):
    """None when the Python module ``name`` imports in this interpreter, else the error text."""
    try:
        importlib.import_module(name)
    except ImportError as exc:
        return str(exc) or 'No module named %r' % name
    except Exception as exc:  # pylint: disable=broad-except
        return '%s: %s' % (type(exc).__name__, exc)
    return None


def search_path(given, environ_path):
    """The directories searched for executables: ``given``, else PATH's absolute folders then DEFAULT_PATH."""
    if given is not None:
        return list(given)
    search = []
    for folder in (environ_path or '').split(os.pathsep) + list(DEFAULT_PATH):
        if folder and os.path.isabs(folder) and folder not in search:
            search.append(folder)
    return search


def check_params(params, euid, interpreter, environ_path):
    """``check_host`` driven by the host_prerequisites options ``params`` (ARGUMENT_SPEC's defaults for what
    is left out): (found, problems)."""
    options = dict((name, spec.get('default')) for name, spec in ARGUMENT_SPEC.items())
    options.update((name, value) for name, value in params.items() if value is not None)
    search = search_path(params.get('search_path'), environ_path)
    found, problems = check_host(
        root=options['root'], require_systemd=options['systemd'], require_cgroup2=options['cgroup2'],
        controllers=options['cgroup_controllers'], require_root=options['root_user'], euid=euid,
        executables=options['executables'], search=search, python_modules=options['python_modules'],
        importable=importable, interpreter=interpreter,
        packages=dict((str(k), str(v)) for k, v in options['packages'].items()))
    found['interpreter'] = interpreter
    found['search_path'] = search
    return found, problems


def failure_message(problems):
    return 'this host cannot be managed: %s' % '; '.join(problems)
