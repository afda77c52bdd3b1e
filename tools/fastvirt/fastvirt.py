# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fastvirt: a private libvirtd on the CI host for the fast test tier.

The daemon is the monolithic ``libvirtd`` of Debian 12, started inside its own
mount namespace (``unshare --mount``) where the state directory's files are
bind-mounted over ``/etc/libvirt``, ``/etc/passwd``, ``/etc/group``,
``/var/lib/libvirt``, ``/var/cache/libvirt``, ``/var/log/libvirt`` and
``/run/libvirt``. The host's own files stay untouched; only empty mount points
for the four libvirt directories are created when they are missing.

Everything lives in the state directory ``DIR``:

    DIR/libvirtd.conf, DIR/libvirtd.pid   daemon config and pid file
    DIR/sock/libvirt-sock                 the socket clients connect to
    DIR/etc/libvirt/qemu.conf             QEMU driver config for the sandbox
    DIR/etc/{passwd,group}                host copies plus libvirt-qemu
    DIR/{lib,cache,log,run}               libvirt's state, cache, logs, run
    DIR/run/qemu/NAME.pid                 each guest's QEMU pid file
    DIR/kernels/{idle,spin}.elf           multiboot guest kernels

Processes are tracked by those pid files and stopped by pid, never by name.

Usable as a library (``FastVirt``) and as a command line tool::

    tools/fastvirt/fastvirt up --dir DIR
    tools/fastvirt/fastvirt guest --dir DIR NAME --vcpus 4 --iothreads 1
    tools/fastvirt/fastvirt status --dir DIR
    tools/fastvirt/fastvirt down --dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from xml.sax.saxutils import escape

LIBVIRTD = 'libvirtd'
QEMU = 'qemu-system-x86_64'

# Host directories that get a private copy inside the daemon's namespace.
# key: subdirectory of the state directory, value: path seen by libvirtd.
MOUNTS = (
    ('lib', '/var/lib/libvirt'),
    ('cache', '/var/cache/libvirt'),
    ('log', '/var/log/libvirt'),
    ('run', '/run/libvirt'),
)

QEMU_CONF = '''\
# fastvirt: QEMU driver for a sandboxed libvirtd on a CI host.
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
namespaces = [ ]
stdio_handler = "file"
cgroup_controllers = [ "cpu", "cpuacct", "cpuset", "memory", "devices", "blkio" ]
'''

LIBVIRTD_CONF = '''\
# fastvirt: private monolithic libvirtd; clients use the socket below.
unix_sock_dir = "{sock}"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:{log}"
'''

# The guest kernels have one home, the lab's recipe (tools/lab/image/guests):
# kind -> source file there.
GUEST_SOURCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             'lab', 'image', 'guests')
KERNELS = {
    # interrupts off, halt: the vCPU sleeps in the host, costing almost nothing
    'idle': 'halt.S',
    # a tight loop on the boot vCPU only: one busy thread whatever the vCPU count
    'spin': 'spin.S',
    # every vCPU started and looping: a guest's demand is its vCPU count
    'spinall': 'spinall.S',
}

DEFAULT_MEMORY_MIB = 16


class FastVirtError(RuntimeError):
    """Something in the harness failed; the message says what and where."""


def missing_tools():
    """Commands this tier needs that are not installed (empty list: all there)."""
    needed = (LIBVIRTD, QEMU, 'unshare', 'mount', 'as', 'ld')
    search = os.environ.get('PATH', '') + ':/usr/sbin:/sbin'
    return [tool for tool in needed if shutil.which(tool, path=search) is None]


def _which(tool):
    path = shutil.which(tool, path=os.environ.get('PATH', '') + ':/usr/sbin:/sbin')
    if path is None:
        raise FastVirtError('%s is not installed (see APT_PACKAGES in the Makefile)' % tool)
    return path


def _read_pid(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _alive(pid):
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % pid) as handle:
            state = handle.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != 'Z'


def _exe_name(pid):
    try:
        return os.path.basename(os.readlink('/proc/%d/exe' % pid)).replace(' (deleted)', '')
    except OSError:
        return ''


def _stop_pid(pid, expect, timeout=10.0):
    """SIGTERM then SIGKILL one process, only if its executable is ``expect``."""
    if not _alive(pid) or not _exe_name(pid).startswith(expect):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def read_threads(pid):
    """Live CPU affinity of a QEMU process, classified like libvirt does.

    Returns ``{'vcpus': {n: cpulist}, 'iothreads': {id: cpulist},
    'emulator': set of cpulists}`` read from ``/proc/PID/task/*/status``:
    threads named ``CPU n/TCG`` (or ``CPU n/KVM``) are vCPUs, ``IO iothreadN``
    IOThreads, every other thread belongs to the emulator.
    """
    result = {'vcpus': {}, 'iothreads': {}, 'emulator': set()}
    task_dir = '/proc/%d/task' % pid
    for tid in os.listdir(task_dir):
        fields = {}
        try:
            with open(os.path.join(task_dir, tid, 'status')) as handle:
                for line in handle:
                    key, sep, value = line.partition(':')
                    if sep:
                        fields[key] = value.strip()
        except OSError:
            continue  # the thread ended meanwhile
        name, cpus = fields.get('Name', ''), fields.get('Cpus_allowed_list', '')
        if name.startswith('CPU ') and '/' in name:
            result['vcpus'][int(name[4:].split('/')[0])] = cpus
        elif name.startswith('IO iothread'):
            result['iothreads'][int(name[len('IO iothread'):])] = cpus
        else:
            result['emulator'].add(cpus)
    return result


def domain_xml(name, vcpus=1, memory=DEFAULT_MEMORY_MIB, iothreads=0, kernel='/dev/null',
               partition=None, extra_cputune=''):
    """Domain XML for a tiny TCG guest booting a multiboot kernel."""
    parts = [
        "<domain type='qemu'>",
        '  <name>%s</name>' % escape(name),
        "  <memory unit='MiB'>%d</memory>" % memory,
        "  <vcpu placement='static'>%d</vcpu>" % vcpus,
    ]
    if iothreads:
        parts.append('  <iothreads>%d</iothreads>' % iothreads)
    if extra_cputune:
        parts.append('  <cputune>%s</cputune>' % extra_cputune)
    if partition:
        parts.append('  <resource><partition>%s</partition></resource>' % escape(partition))
    parts += [
        "  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel></os>" % escape(kernel),
        "  <clock offset='utc'/>",
        '  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>',
        '  <devices>',
        '    <emulator>%s</emulator>' % escape(_which(QEMU)),
        "    <controller type='usb' model='none'/>",
        "    <memballoon model='none'/>",
        '  </devices>',
        '</domain>',
    ]
    return '\n'.join(parts) + '\n'


class FastVirt(object):
    """One private libvirtd and its guests, all state under ``state_dir``."""

    def __init__(self, state_dir, cache_dir=None):
        self.dir = os.path.abspath(state_dir)
        self.cache_dir = os.path.abspath(cache_dir) if cache_dir else os.path.join(self.dir, 'cache')
        self.pidfile = os.path.join(self.dir, 'libvirtd.pid')
        self.conf = os.path.join(self.dir, 'libvirtd.conf')
        self.sock_dir = os.path.join(self.dir, 'sock')
        self.socket = os.path.join(self.sock_dir, 'libvirt-sock')
        self.log = os.path.join(self.dir, 'log', 'libvirtd.log')
        self.kernel_dir = os.path.join(self.dir, 'kernels')
        self.uri = 'qemu:///system?socket=%s' % self.socket
        self._conn = None

    # -- paths -----------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def kernel(self, kind='idle'):
        return os.path.join(self.kernel_dir, '%s.elf' % kind)

    def guest_pid(self, name):
        """The QEMU pid of a running guest, from libvirt's pid file in DIR/run."""
        pid = _read_pid(self.path('run', 'qemu', '%s.pid' % name))
        return pid if _alive(pid) else None

    # -- daemon ----------------------------------------------------------
    def daemon_pid(self):
        pid = _read_pid(self.pidfile)
        return pid if _alive(pid) and _exe_name(pid) == 'libvirtd' else None

    def running(self):
        return self.daemon_pid() is not None

    def prepare(self):
        """Write configs, passwd/group copies and kernels into the state dir."""
        if len(self.socket) > 100:
            raise FastVirtError('state dir %s is too long for a unix socket path' % self.dir)
        for sub in ('sock', 'etc/libvirt', 'kernels', 'lib', 'log', 'run'):
            os.makedirs(self.path(sub), exist_ok=True)
        os.makedirs(self.cache_dir, exist_ok=True)
        os.chmod(self.dir, 0o700)
        with open(self.path('etc', 'libvirt', 'qemu.conf'), 'w') as handle:
            handle.write(QEMU_CONF)
        with open(self.conf, 'w') as handle:
            handle.write(LIBVIRTD_CONF.format(sock=self.sock_dir, log=self.log))
        self._write_accounts()
        self.build_kernels()

    def _write_accounts(self):
        with open('/etc/passwd') as handle:
            passwd = handle.read()
        with open('/etc/group') as handle:
            group = handle.read()
        used_ids = set()
        for line in (passwd + group).splitlines():
            fields = line.split(':')
            if len(fields) > 2 and fields[2].isdigit():
                used_ids.add(int(fields[2]))
        free = 64055
        while free in used_ids:
            free += 1
        names = {line.split(':')[0] for line in group.splitlines()}
        if not passwd.endswith('\n'):
            passwd += '\n'
        if not group.endswith('\n'):
            group += '\n'
        if not any(line.startswith('libvirt-qemu:') for line in passwd.splitlines()):
            passwd += 'libvirt-qemu:x:%d:%d:fastvirt QEMU:/var/lib/libvirt:/usr/sbin/nologin\n' % (free, free)
        for extra in ('libvirt-qemu', 'kvm', 'libvirt'):
            if extra not in names:
                group += '%s:x:%d:\n' % (extra, free)
                free += 1
                while free in used_ids:
                    free += 1
        with open(self.path('etc', 'passwd'), 'w') as handle:
            handle.write(passwd)
        with open(self.path('etc', 'group'), 'w') as handle:
            handle.write(group)

    def build_kernels(self):
        """Assemble and link the multiboot guest kernels (when missing or older than their source)."""
        assembler, linker = _which('as'), _which('ld')
        for kind, source in KERNELS.items():
            target = self.kernel(kind)
            src = os.path.join(GUEST_SOURCES, source)
            if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(src):
                continue
            obj = target[:-4] + '.o'
            for cmd in ([assembler, '--32', '-o', obj, src],
                        [linker, '-m', 'elf_i386', '-Ttext=0x100000', '-e', '_start', '-o', target + '.tmp', obj]):
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      universal_newlines=True, check=False)
                if proc.returncode:
                    raise FastVirtError('building the %s kernel failed: %s: %s' % (kind, ' '.join(cmd), proc.stdout))
            os.rename(target + '.tmp', target)

    def up(self, timeout=120.0):
        """Start the daemon (no-op when it already runs); returns its pid."""
        pid = self.daemon_pid()
        if pid:
            return pid
        libvirtd, unshare, mount = _which(LIBVIRTD), _which('unshare'), _which('mount')
        self.prepare()
        # stale files of an earlier daemon that died
        for stale in (self.pidfile, self.socket):
            if os.path.exists(stale):
                os.unlink(stale)
        for target in dict(MOUNTS).values():
            os.makedirs(target, exist_ok=True)  # empty mount points only
        binds = [(self.path('etc', 'libvirt'), '/etc/libvirt'),
                 (self.path('etc', 'passwd'), '/etc/passwd'),
                 (self.path('etc', 'group'), '/etc/group')]
        binds += [(self.cache_dir if sub == 'cache' else self.path(sub), target) for sub, target in MOUNTS]
        script = ['set -e']
        args = []
        for source, target in binds:
            script.append('"$M" --bind "${%d}" "${%d}"' % (len(args) + 1, len(args) + 2))
            args += [source, target]
        script.append('exec "$D" -d -f "${%d}" -p "${%d}"' % (len(args) + 1, len(args) + 2))
        args += [self.conf, self.pidfile]
        env = dict(os.environ, M=mount, D=libvirtd, LC_ALL='C')
        env.pop('LIBVIRT_DEFAULT_URI', None)
        start_rc = self.path('start.rc')
        if os.path.exists(start_rc):
            os.unlink(start_rc)
        command = [unshare, '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', '\n'.join(script),
                   'fastvirt'] + args
        # The reaper is the daemon's parent (a child subreaper): libvirtd and
        # the QEMU processes it double-forks are reparented to it, and it reaps
        # them at once. Without it they wait for PID 1, and on CI hosts whose
        # init reaps lazily every guest destroy takes ~2 s.
        with open(self.path('log', 'daemon.out'), 'ab') as out:
            subprocess.Popen([sys.executable, os.path.abspath(__file__), '_reaper', self.path('reaper.pid'),
                              start_rc] + command,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                             start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        while not os.path.exists(start_rc):
            if time.monotonic() > deadline:
                raise FastVirtError('libvirtd did not start within %ds; see %s' % (timeout, self.log))
            time.sleep(0.05)
        time.sleep(0.01)
        with open(start_rc) as handle:
            returncode = int(handle.read().strip() or 1)
        if returncode:
            raise FastVirtError('libvirtd did not start (rc %d); see %s and %s'
                                % (returncode, self.path('log', 'daemon.out'), self.log))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.daemon_pid()
            if pid and os.path.exists(self.socket):
                try:
                    self.connect()
                    return pid
                except Exception:  # pylint: disable=broad-except
                    pass
            time.sleep(0.1)
        raise FastVirtError('libvirtd did not answer on %s within %ds; see %s' % (self.socket, timeout, self.log))

    def connect(self):
        """A (cached) libvirt connection to the private daemon."""
        import libvirt  # pylint: disable=import-outside-toplevel
        libvirt.registerErrorHandler(lambda *args: None, None)
        if self._conn is not None:
            try:
                if self._conn.isAlive():
                    return self._conn
            except libvirt.libvirtError:
                pass
        self._conn = libvirt.open(self.uri)
        return self._conn

    def _guest_pidfiles(self):
        qemu_run = self.path('run', 'qemu')
        if not os.path.isdir(qemu_run):
            return []
        return [os.path.join(qemu_run, entry) for entry in os.listdir(qemu_run) if entry.endswith('.pid')]

    def down(self):
        """Destroy and undefine every guest, stop libvirtd, kill leftovers by pid."""
        pid = self.daemon_pid()
        if pid:
            try:
                self.remove_guests()
            except Exception:  # pylint: disable=broad-except
                pass  # the daemon may be wedged: the pid files below still work
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # pylint: disable=broad-except
                    pass
                self._conn = None
            _stop_pid(pid, 'libvirtd')
        for pidfile in self._guest_pidfiles():
            _stop_pid(_read_pid(pidfile), 'qemu-system')
            try:
                os.unlink(pidfile)
            except OSError:
                pass
        reaper = _read_pid(self.path('reaper.pid'))
        if reaper and _alive(reaper):
            deadline = time.monotonic() + 5
            while _alive(reaper) and time.monotonic() < deadline:
                time.sleep(0.05)  # it exits by itself once its children are gone
            _stop_pid(reaper, 'python')
        for stale in (self.pidfile, self.socket, self.path('reaper.pid')):
            if os.path.exists(stale):
                os.unlink(stale)

    def status(self):
        info = {'dir': self.dir, 'uri': self.uri, 'running': False, 'pid': None, 'guests': {}}
        pid = self.daemon_pid()
        if not pid:
            return info
        info.update(running=True, pid=pid)
        conn = self.connect()
        for dom in conn.listAllDomains():
            info['guests'][dom.name()] = {
                'active': bool(dom.isActive()),
                'pid': self.guest_pid(dom.name()) if dom.isActive() else None,
            }
        return info

    # -- guests ----------------------------------------------------------
    def define_guest(self, name, vcpus=1, memory=DEFAULT_MEMORY_MIB, iothreads=0, kernel='idle',
                     partition=None, start=True, extra_cputune=''):
        """Define (and by default start) a guest from a small spec; returns the domain."""
        path = kernel if os.path.sep in kernel else self.kernel(kernel)
        if not os.path.exists(path):
            raise FastVirtError('no kernel %s' % path)
        conn = self.connect()
        dom = conn.defineXML(domain_xml(name, vcpus=vcpus, memory=memory, iothreads=iothreads,
                                        kernel=path, partition=partition, extra_cputune=extra_cputune))
        if start:
            dom.create()
        return dom

    def remove_guest(self, name):
        """Destroy (if running) and undefine one guest; quiet when it is gone."""
        import libvirt  # pylint: disable=import-outside-toplevel
        conn = self.connect()
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        if dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pid = self.guest_pid(name)
                if pid:
                    _stop_pid(pid, 'qemu-system')
        try:
            dom.undefine()
        except libvirt.libvirtError:
            pass

    def remove_guests(self):
        for dom in self.connect().listAllDomains():
            self.remove_guest(dom.name())


def _reaper(pidfile, rcfile, command):
    """Run ``command`` as a child subreaper; reap every orphan until none is left.

    Writes its own pid to ``pidfile`` and the command's exit code to
    ``rcfile`` (libvirtd -d exits once the daemon is ready).
    """
    import ctypes  # pylint: disable=import-outside-toplevel
    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        sys.stderr.write('fastvirt reaper: prctl(PR_SET_CHILD_SUBREAPER) failed\n')
    with open(pidfile, 'w') as handle:
        handle.write('%d\n' % os.getpid())
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        returncode = subprocess.call(command, stdin=subprocess.DEVNULL)
    except OSError as exc:
        sys.stderr.write('fastvirt reaper: %s\n' % exc)
        returncode = 127
    with open(rcfile + '.tmp', 'w') as handle:
        handle.write('%d\n' % returncode)
    os.rename(rcfile + '.tmp', rcfile)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    try:
        os.unlink(pidfile)
    except OSError:
        pass
    return 0


def default_base():
    """Where test sessions keep their state dirs: ``$FASTVIRT_BASE``, else a tmpfs.

    On tmpfs (``/dev/shm``) libvirt's status and config writes cost ~1 ms
    instead of 3-10 ms of fsync on disk; every pin call makes one or two.
    """
    if os.environ.get('FASTVIRT_BASE'):
        return os.path.abspath(os.environ['FASTVIRT_BASE'])
    shm = '/dev/shm'
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return os.path.join(shm, 'kvmlab-fastvirt')
    return os.path.join(tempfile.gettempdir(), 'kvmlab-fastvirt')


def reap_stale(base):
    """Stop the daemons of state dirs under ``base`` whose owner process is gone.

    A test session writes its pid to ``DIR/owner.pid``; when that session was
    killed before its teardown, the next one stops what it left (by the pid
    files in that directory) and removes the directory. Returns the dirs reaped.
    """
    reaped = []
    if not os.path.isdir(base):
        return reaped
    for entry in sorted(os.listdir(base)):
        state_dir = os.path.join(base, entry)
        owner_file = os.path.join(state_dir, 'owner.pid')
        if not os.path.isfile(owner_file) or _alive(_read_pid(owner_file)):
            continue
        FastVirt(state_dir).down()
        shutil.rmtree(state_dir, ignore_errors=True)
        reaped.append(state_dir)
    return reaped


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['_reaper']:
        return _reaper(argv[1], argv[2], argv[3:])
    parser = argparse.ArgumentParser(prog='fastvirt', description='Private libvirtd for the fast test tier.')
    parser.add_argument('command', choices=('up', 'down', 'status', 'guest', 'remove-guest', 'uri'))
    parser.add_argument('name', nargs='?', help='guest name (guest, remove-guest)')
    parser.add_argument('--dir', required=True, help='state directory (created by up)')
    parser.add_argument('--cache-dir', help='QEMU capabilities cache (default DIR/cache); sharing one saves ~8 s')
    parser.add_argument('--vcpus', type=int, default=1)
    parser.add_argument('--memory', type=int, default=DEFAULT_MEMORY_MIB, help='MiB')
    parser.add_argument('--iothreads', type=int, default=0)
    parser.add_argument('--kernel', default='idle', help='idle, spin, spinall or a path')
    parser.add_argument('--partition', help='persistent <resource><partition>')
    parser.add_argument('--no-start', action='store_true', help='define only')
    args = parser.parse_intermixed_args(argv)
    virt = FastVirt(args.dir, cache_dir=args.cache_dir)
    try:
        if args.command == 'up':
            start = time.monotonic()
            pid = virt.up()
            print('libvirtd pid %d up in %.1f s; uri %s' % (pid, time.monotonic() - start, virt.uri))
        elif args.command == 'down':
            virt.down()
            print('down')
        elif args.command == 'status':
            info = virt.status()
            print(json.dumps(info, indent=2, sort_keys=True))
            return 0 if info['running'] else 3
        elif args.command == 'uri':
            print(virt.uri)
        elif args.command in ('guest', 'remove-guest'):
            if not args.name:
                parser.error('%s needs a guest name' % args.command)
            if not virt.running():
                raise FastVirtError('libvirtd is not running in %s (run "up" first)' % virt.dir)
            if args.command == 'guest':
                virt.define_guest(args.name, vcpus=args.vcpus, memory=args.memory, iothreads=args.iothreads,
                                  kernel=args.kernel, partition=args.partition, start=not args.no_start)
                print('%s %s' % (args.name, 'defined' if args.no_start else 'running, pid %s'
                                 % virt.guest_pid(args.name)))
            else:
                virt.remove_guest(args.name)
                print('%s removed' % args.name)
    except FastVirtError as exc:
        print('fastvirt: %s' % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
