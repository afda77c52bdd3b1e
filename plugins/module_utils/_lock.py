# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run at a time per host: an flock held by a small detached holder process.

Every Ansible task is a separate process on the managed host, so a lock that
must last for a whole role entry point cannot live in a module. ``acquire()``
takes an exclusive ``flock`` on the lock file and hands the open file to a
holder process (forked from the module, detached with ``setsid``, stdio on
/dev/null), which keeps it until one of:

- the run releases it (``release()``: the last ``leave`` of a token whose
  ``enter`` count drops to 0; nested entry points of one run re-enter);
- the process that represents the run on this host ends (``find_run()``:
  the per-connection sshd session under ssh, the ``ansible-playbook`` main
  process under a local connection), checked every second with its start
  time, so a reused pid never counts as alive;
- ``max_hold`` seconds have passed;
- SIGTERM.

The kernel drops the flock when the holder dies in any way (SIGKILL
included), so a stale lock never blocks. The lock file is never removed
(removing an flock file lets two runs lock two different files); the holder
writes its description into it (one JSON line) and empties it on exit.

The holder listens on an abstract unix socket named after the lock path
(no file, gone with the process); requests carry the run's token, and only
root or the holder's own uid may talk to it.

Pure parts (no I/O): ``parse_stat``, ``is_controller``, ``find_run``,
``holder_record``, ``parse_record``, ``busy_message``, ``socket_name``,
``token_digest``. Everything is Python 3.8 compatible and imported at the top:
the holder outlives the module's temporary files, so it must not import
lazily.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
import select
import signal
import socket
import struct
import time

try:
    import ctypes
    _LIBC = ctypes.CDLL(None, use_errno=True)
except Exception:  # pylint: disable=broad-except
    _LIBC = None

DEFAULT_PATH = '/run/lock/kvmlab-host-resources.lock'
HOLDER_NAME = b'kvmlab-hostlock'
SSHD_NAMES = ('sshd', 'sshd-session')
RECORD_VERSION = 1
POLL = 0.2
MIN_TOKEN = 16


class LockError(Exception):
    """The lock cannot be taken or released; the message says why."""


class LockBusy(LockError):
    """Another run holds the lock past the timeout; ``holder`` describes it."""

    def __init__(self, message, holder):
        super(LockBusy, self).__init__(message)
        self.holder = holder


# -- pure parts -------------------------------------------------------------

def parse_stat(text):
    """``/proc/<pid>/stat`` -> dict(comm, state, ppid, session, starttime).

    comm may hold spaces and parentheses: it runs from the first '(' to the
    last ')'. A trailing NUL or newline is tolerated.
    """
    text = text.rstrip('\0\n ')
    left, right = text.find('('), text.rfind(')')
    if left < 0 or right < left:
        raise ValueError('not a /proc/<pid>/stat line: %r' % text[:60])
    fields = text[right + 2:].split()
    if len(fields) < 20:
        raise ValueError('truncated /proc/<pid>/stat line: %r' % text[:60])
    return {'pid': int(text[:left]), 'comm': text[left + 1:right], 'state': fields[0],
            'ppid': int(fields[1]), 'session': int(fields[3]), 'starttime': int(fields[19])}


def _base(arg):
    return arg.rsplit('/', 1)[-1]


def is_controller(comm, cmdline):
    """Whether a process is an Ansible controller (``ansible-playbook``, ``ansible``, ...).

    comm is cut at 15 characters (``ansible-playboo``); a controller run as
    ``python /usr/bin/ansible-playbook`` or ``python -m ansible`` shows as
    python, so argv is looked at too. Case matters: AnsiballZ module
    wrappers are not controllers.
    """
    if comm.startswith('ansible'):
        return True
    argv = list(cmdline or ())
    if argv and _base(argv[0]).startswith('ansible'):
        return True
    if len(argv) > 1 and _base(argv[0]).startswith('python'):
        if _base(argv[1]).startswith('ansible'):
            return True
        if argv[1] == '-m' and len(argv) > 2 and argv[2].startswith('ansible'):
            return True
    return False


def find_run(start_pid, read):
    """The process that represents the run on this host, walking up from ``start_pid``.

    ``read(pid)`` returns ``dict(pid, ppid, comm, starttime, cmdline)`` or
    None. The nearest ancestor (``start_pid`` included) that is either

    - an sshd process (comm ``sshd`` or ``sshd-session``): under ssh that is
      the connection's session process, which ends when the connection
      closes (with ControlPersist: when the master connection closes); or
    - an Ansible controller: under a local connection the task's worker,
      a fork of the main ``ansible-playbook`` with the same command line, so
      the walk climbs on while the parent has the same command line and
      returns the main process, which lives as long as the run;

    decides. ``become`` (sudo, su) and shells in between are passed through.
    Returns ``dict(pid, comm, starttime, kind='ssh'|'local')`` or None.
    """
    pid, seen = start_pid, set()
    while pid and pid > 1 and pid not in seen:
        seen.add(pid)
        info = read(pid)
        if info is None:
            return None
        if info['comm'] in SSHD_NAMES:
            return {'pid': info['pid'], 'comm': info['comm'], 'starttime': info['starttime'], 'kind': 'ssh'}
        if is_controller(info['comm'], info.get('cmdline')):
            top = info
            while top['ppid'] > 1:
                parent = read(top['ppid'])
                if parent is None or parent.get('cmdline') != info.get('cmdline') or parent['comm'] != info['comm']:
                    break
                top = parent
            return {'pid': top['pid'], 'comm': top['comm'], 'starttime': top['starttime'], 'kind': 'local'}
        pid = info['ppid']
    return None


def orphan_workers(main, processes):
    """Workers of a controller ``main`` that ended, still running their task.

    Ansible's workers are forks of the main process (same comm and command
    line) that make themselves session leaders; when the main process is
    killed, the worker running a task finishes that task as an orphan. Those
    are the processes, among ``processes`` (dicts from ``read_process``), with
    main's comm and command line, started after it, whose parent is not such
    a process either (a live run's workers) and that have no such child (a
    live run's main process while it runs a task).
    """
    same = [proc for proc in processes
            if proc['comm'] == main['comm'] and proc.get('cmdline') == main.get('cmdline')
            and proc['pid'] != main['pid'] and proc['starttime'] >= main['starttime']
            and proc.get('state') not in ('Z', 'X')]
    pids = set(proc['pid'] for proc in same)
    parents = set(proc['ppid'] for proc in same)
    return sorted(proc['pid'] for proc in same if proc['ppid'] not in pids and proc['pid'] not in parents)


def token_digest(token):
    return hashlib.sha256(token.encode('utf-8')).hexdigest()


def socket_name(path):
    """Abstract unix socket address for the holder of ``path`` (no file on disk)."""
    return b'\0kvmlab-host-lock-' + hashlib.sha256(os.path.abspath(path).encode('utf-8')).hexdigest()[:24].encode()


def iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


def holder_record(pid, starttime, token, owner, since, max_hold, watch, client=None):
    """The one JSON line the holder writes into the lock file."""
    return json.dumps({
        'version': RECORD_VERSION, 'pid': pid, 'starttime': starttime, 'owner': owner,
        'since': iso(since), 'since_epoch': round(since, 3), 'max_hold_until': iso(since + max_hold),
        'watch': watch, 'client': client, 'token_sha256': token_digest(token),
    }, sort_keys=True) + '\n'


def parse_record(text):
    """The lock file's content -> holder dict, or None when empty or not ours.

    The first JSON object counts: a shorter record written over a longer
    one may leave old bytes after it until the truncate.
    """
    text = text.strip('\0 \n')
    if not text:
        return None
    try:
        data, _end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get('version') != RECORD_VERSION or not isinstance(data.get('pid'), int):
        return None
    return data


def busy_message(path, holder, waited, now):
    """What a run that could not get the lock is told."""
    if holder is None:
        who = 'a process that left no holder record in it (not a kvmlab host_lock holder)'
        tail = ''
    else:
        who = 'holder pid %d, owner %r, since %s (%d s ago)' % (
            holder['pid'], holder.get('owner') or '?', holder.get('since', '?'),
            max(0, int(now - holder.get('since_epoch', now))))
        watch = holder.get('watch') or {}
        if watch.get('pid'):
            tail = ('; it frees itself when its run ends (%s process %d %s) or at %s (max_hold)'
                    % (watch.get('kind'), watch['pid'], watch.get('comm'), holder.get('max_hold_until', '?')))
        else:
            tail = '; it frees itself at %s (max_hold)' % holder.get('max_hold_until', '?')
        if holder.get('client'):
            who += ', from %s' % holder['client']
    return 'host lock %s is held by another run: %s; waited %d s%s' % (path, who, int(waited), tail)


# -- processes --------------------------------------------------------------

def read_process(pid, proc_root='/proc'):
    """``dict(pid, ppid, comm, state, session, starttime, cmdline)`` of a live process, or None."""
    base = os.path.join(proc_root, str(pid))
    try:
        with open(os.path.join(base, 'stat'), 'r') as handle:
            info = parse_stat(handle.read())
    except (IOError, OSError, ValueError):
        return None
    try:
        with open(os.path.join(base, 'cmdline'), 'rb') as handle:
            raw = handle.read()
        info['cmdline'] = [part.decode('utf-8', 'replace') for part in raw.split(b'\0') if part]
    except (IOError, OSError):
        info['cmdline'] = []
    return info


def alive(pid, starttime, proc_root='/proc'):
    """The process with this pid and start time still runs (a zombie has ended)."""
    info = read_process(pid, proc_root)
    return info is not None and info['starttime'] == starttime and info['state'] not in ('Z', 'X')


# -- talking to a holder ----------------------------------------------------

def request(path, op, token, timeout=5.0):
    """Send one request to the holder of ``path``; its reply dict, or None when no holder listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(socket_name(path))
        except (IOError, OSError):
            return None
        sock.sendall(json.dumps({'op': op, 'token': token}).encode('utf-8') + b'\n')
        data = b''
        while not data.endswith(b'\n'):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (IOError, OSError):
        return None
    finally:
        sock.close()
    try:
        return json.loads(data.decode('utf-8'))
    except ValueError:
        return None


def read_holder(path):
    """The record in the lock file, if its holder still runs."""
    try:
        with open(path, 'r') as handle:
            record = parse_record(handle.read())
    except (IOError, OSError):
        return None
    if record and alive(record['pid'], record.get('starttime')):
        return record
    return None


def all_processes(proc_root='/proc'):
    found = []
    for entry in os.listdir(proc_root):
        if entry.isdigit():
            info = read_process(int(entry), proc_root)
            if info is not None:
                found.append(info)
    return found


def wait_gone(pid, starttime, timeout=5.0):
    deadline = time.time() + timeout
    while alive(pid, starttime):
        if time.time() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _try_flock(path):
    """An fd holding the exclusive lock on the file now at ``path``, or None when busy."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o644)
    except (IOError, OSError) as exc:
        raise LockError('cannot open lock file %s: %s' % (path, exc.strerror or exc))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError) as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise LockError('cannot lock %s: %s' % (path, exc.strerror or exc))
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        same = False
    if not same:  # someone replaced the file between open and flock: lock the new one
        os.close(fd)
        return _try_flock(path)
    return fd


def probe(path, token):
    """What ``acquire`` would do now, changing nothing: ('reenter'|'acquire'|'busy', holder)."""
    reply = request(path, 'ping', token)
    if reply and reply.get('ok'):
        return 'reenter', reply.get('holder')
    if not os.path.exists(path):
        return 'acquire', None
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IOError, OSError) as exc:
        raise LockError('cannot open lock file %s: %s' % (path, exc.strerror or exc))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except (IOError, OSError):
        return 'busy', read_holder(path)
    finally:
        os.close(fd)
    return 'acquire', None


def acquire(path, token, owner, timeout, max_hold, watch, client=None, sleep=time.sleep):
    """Take the lock for ``token`` (or re-enter it); a dict describing the result.

    Raises LockBusy after ``timeout`` seconds when another run holds it.
    """
    started = time.time()
    deadline = started + timeout
    while True:
        reply = request(path, 'enter', token)
        if reply and reply.get('ok'):
            return {'acquired': False, 'reentered': True, 'depth': reply['depth'], 'holder': reply['holder'],
                    'waited': round(time.time() - started, 3)}
        fd = _try_flock(path)
        if fd is not None:
            holder = _spawn_holder(fd, path, token, owner, max_hold, watch, client)
            return {'acquired': True, 'reentered': False, 'depth': 1, 'holder': holder,
                    'waited': round(time.time() - started, 3)}
        now = time.time()
        if now >= deadline:
            holder = read_holder(path)
            raise LockBusy(busy_message(path, holder, now - started, now), holder)
        sleep(min(POLL, max(0.0, deadline - now)))


def release(path, token):
    """Leave the lock once for ``token``; dict(held, released, depth, holder)."""
    reply = request(path, 'leave', token)
    if not reply:
        return {'held': False, 'released': False, 'depth': 0, 'holder': read_holder(path)}
    if not reply.get('ok'):
        return {'held': False, 'released': False, 'depth': 0, 'holder': reply.get('holder')}
    holder = reply['holder']
    if reply['depth'] == 0:
        if not wait_gone(holder['pid'], holder['starttime']):
            raise LockError('holder %d of %s did not exit after release' % (holder['pid'], path))
        return {'held': True, 'released': True, 'depth': 0, 'holder': holder}
    return {'held': True, 'released': False, 'depth': reply['depth'], 'holder': holder}


# -- the holder -------------------------------------------------------------

def _spawn_holder(fd, path, token, owner, max_hold, watch, client):
    """Fork the detached holder, hand it ``fd``; its record once it listens."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked process
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                code = _holder_main(fd, write_end, path, token, owner, max_hold, watch, client)
            else:
                code = 0
        except BaseException:  # pylint: disable=broad-except
            code = 1
        finally:
            os._exit(code)  # pylint: disable=protected-access
    os.close(write_end)
    os.close(fd)
    os.waitpid(child, 0)
    data = b''
    deadline = time.time() + 15
    while time.time() < deadline:
        ready, _w, _x = select.select([read_end], [], [], max(0.0, deadline - time.time()))
        if not ready:
            break
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    try:
        reply = json.loads(data.decode('utf-8'))
    except ValueError:
        raise LockError('the lock holder for %s did not start (no report from it)' % path)
    if not reply.get('ok'):
        raise LockError('the lock holder for %s could not start: %s' % (path, reply.get('error')))
    return reply['holder']


def _peer_uid(conn):
    creds = conn.getsockopt(socket.SOL_SOCKET, getattr(socket, 'SO_PEERCRED', 17), struct.calcsize('3i'))
    return struct.unpack('3i', creds)[1]


def _holder_main(fd, report_fd, path, token, owner, max_hold, watch, client):  # pragma: no cover
    """The holder's life; returns the exit code. Runs detached, stdio on /dev/null."""
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    keep = sorted({0, 1, 2, fd, report_fd})
    for low, high in zip(keep, keep[1:] + [65536]):
        os.closerange(low + 1, high)
    if _LIBC is not None:
        try:
            _LIBC.prctl(15, HOLDER_NAME, 0, 0, 0)  # PR_SET_NAME: shows as kvmlab-hostlock in ps
        except Exception:  # pylint: disable=broad-except
            pass
    stop = []
    signal.signal(signal.SIGTERM, lambda *_a: stop.append('SIGTERM'))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    me = read_process(os.getpid())
    # the run's controller, command line included, kept in memory only (it may carry -e secrets)
    controller = read_process(watch['pid']) if watch and watch.get('kind') == 'local' else None
    if controller is not None and controller['starttime'] != watch.get('starttime'):
        controller = None
    since = time.time()
    digest = token_digest(token)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    for _attempt in range(50):  # a holder that just ended may still hold the name for an instant
        try:
            listener.bind(socket_name(path))
            bound = True
            break
        except (IOError, OSError):
            time.sleep(0.1)
    if not bound:
        os.write(report_fd, json.dumps({'ok': False, 'error': 'another holder listens for this lock'}).encode())
        return 1
    listener.listen(16)
    text = holder_record(os.getpid(), me['starttime'] if me else None, token, owner, since, max_hold, watch, client)
    holder = json.loads(text)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode('utf-8'))
    os.ftruncate(fd, len(text.encode('utf-8')))
    os.write(report_fd, json.dumps({'ok': True, 'holder': holder}).encode('utf-8'))
    os.close(report_fd)
    depth = 1
    reason = None
    try:
        while reason is None:
            if stop:
                reason = stop[0]
                break
            if time.time() >= since + max_hold:
                reason = 'max_hold'
                break
            if watch and watch.get('pid') and not alive(watch['pid'], watch.get('starttime')):
                if controller is not None and orphan_workers(controller, all_processes()):
                    time.sleep(0.5)  # the killed run's last task still runs: hold on until it ends
                    continue
                reason = 'run gone'
                break
            try:
                ready, _w, _x = select.select([listener], [], [], 0.5)
            except (IOError, OSError, select.error):
                continue
            if not ready:
                continue
            try:
                conn, _addr = listener.accept()
            except (IOError, OSError):
                continue
            try:
                conn.settimeout(2.0)
                if _peer_uid(conn) not in (0, os.getuid()):
                    conn.sendall(b'{"ok": false, "error": "not allowed"}\n')
                    continue
                data = b''
                while not data.endswith(b'\n') and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                message = json.loads(data.decode('utf-8'))
                given = token_digest(str(message.get('token', '')))
                if not hmac.compare_digest(given, digest):
                    conn.sendall((json.dumps({'ok': False, 'error': 'other token', 'holder': holder}) + '\n').encode())
                    continue
                op = message.get('op')
                if op == 'enter':
                    depth += 1
                elif op == 'leave':
                    depth -= 1
                    if depth <= 0:
                        listener.close()  # late enters now find no holder and take the flock themselves
                        reason = 'released'
                conn.sendall((json.dumps({'ok': True, 'depth': max(depth, 0), 'holder': holder}) + '\n').encode())
            except (IOError, OSError, ValueError, AttributeError):
                pass
            finally:
                conn.close()
    finally:
        try:
            listener.close()
        except (IOError, OSError):
            pass
        try:
            os.ftruncate(fd, 0)
        except (IOError, OSError):
            pass
        os.close(fd)  # the kernel drops the flock here
    return 0
