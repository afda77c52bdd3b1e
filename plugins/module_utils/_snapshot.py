# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One snapshot/restore library for every layer.

A snapshot is one JSON file per layer, root-only (directory 0700, file
0600), written once and never overwritten::

    {"schema": "kvmlab.host_resources/snapshot", "version": 2,
     "layer": "memory", "created": "2024-01-01T00:00:00Z", "host": "lab",
     "files": {"/abs/path": {"exists": true, "mode": "0644", "owner": "root",
                             "group": "root", "content_b64": "..."}
               | {"exists": false}},
     "dirs": {"/abs/dir": {"exists": true, "mode": "0755", "owner": "root",
                           "group": "root"} | {"exists": false}},
     "values": {"<key>": <any JSON the layer records>}}

Functions are pure (data in, data out) unless their name starts with
``read_``/``apply_`` or they are ``capture``, ``load``, ``save`` and
``discard``. Errors are ``SnapshotError("<path>: <problem>")``.
Python 3.8 compatible; no Ansible imports.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import errno
import json
import os
import re
import stat as _stat
import tempfile

SCHEMA = 'kvmlab.host_resources/snapshot'
VERSION = 2

#: Layer names of the role snapshots written by release 1 (``{"version": 1, "role": ...}``).
LEGACY_ROLE_LAYERS = {
    'lab_host_resource_management': 'host_resource_management',
    'shared_execution_pool': 'shared_execution_pool',
}
#: Top-level keys of a release 1 role snapshot that are not files/dirs: kept under ``values``.
_LEGACY_ROLE_SKIP = ('version', 'role', 'files', 'dirs')
#: memory_oversub's release 1 snapshot (``{"format": 1, ...}``).
LEGACY_MEMORY_FORMAT = 1
LEGACY_MEMORY_MODULE = 'kvmlab.host_resources.memory_oversub'

_MODE_RE = re.compile(r'^[0-7]{3,4}$')
_LAYER_RE = re.compile(r'^[a-z][a-z0-9_]*$')


class SnapshotError(ValueError):
    """A snapshot that cannot be read, parsed or used; the message starts with its path."""


# ---------------------------------------------------------------------------
# Building (pure)

def utc_now():
    """The current time as ISO-8601 UTC with a ``Z`` (second precision)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def new_snapshot(layer, host=None, created=None):
    """An empty current-version snapshot of ``layer``."""
    if not isinstance(layer, str) or not _LAYER_RE.match(layer):
        raise SnapshotError('%s: bad layer name %r' % ('snapshot', layer))
    return {
        'schema': SCHEMA,
        'version': VERSION,
        'layer': layer,
        'created': created if created is not None else utc_now(),
        'host': host,
        'files': {},
        'dirs': {},
        'values': {},
    }


def mode_text(st_mode):
    """``'0644'`` from a ``st_mode``."""
    return '%04o' % _stat.S_IMODE(st_mode)


def file_record(stat_result, content, owner=None, group=None):
    """The record of one file: ``{"exists": false}`` when ``stat_result`` is None."""
    if stat_result is None:
        return {'exists': False}
    if isinstance(content, str):
        content = content.encode('utf-8')
    return {
        'exists': True,
        'mode': mode_text(stat_result.st_mode),
        'owner': owner,
        'group': group,
        'content_b64': base64.b64encode(content or b'').decode('ascii'),
    }


def dir_record(stat_result, owner=None, group=None):
    """The record of one directory: ``{"exists": false}`` when ``stat_result`` is None."""
    if stat_result is None:
        return {'exists': False}
    return {'exists': True, 'mode': mode_text(stat_result.st_mode), 'owner': owner, 'group': group}


def record_file(snapshot, path, stat_result, content, owner=None, group=None):
    """Record one file in ``snapshot['files']``; returns the record."""
    record = file_record(stat_result, content, owner, group)
    snapshot.setdefault('files', {})[path] = record
    return record


def record_dir(snapshot, path, stat_result, owner=None, group=None):
    """Record one directory in ``snapshot['dirs']``; returns the record."""
    record = dir_record(stat_result, owner, group)
    snapshot.setdefault('dirs', {})[path] = record
    return record


def file_content(record):
    """The bytes a file record holds (None when the file did not exist)."""
    if not record or not record.get('exists'):
        return None
    return base64.b64decode(record.get('content_b64') or '')


# ---------------------------------------------------------------------------
# Reading the host (I/O)

def _names(st):
    try:
        import pwd
        owner = pwd.getpwuid(st.st_uid).pw_name
    except (ImportError, KeyError):
        owner = str(st.st_uid)
    try:
        import grp
        group = grp.getgrgid(st.st_gid).gr_name
    except (ImportError, KeyError):
        group = str(st.st_gid)
    return owner, group


def _stat_of(path, is_kind, kind):
    """``os.stat`` of ``path``, None when it is absent; SnapshotError when it is not a ``kind``."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise SnapshotError('%s: cannot stat: %s' % (path, exc.strerror or exc))
    if not is_kind(st.st_mode):
        raise SnapshotError('%s: not a %s' % (path, kind))
    return st


def read_file_record(path):
    """The record of ``path`` as it is now (``{"exists": false}`` when absent)."""
    st = _stat_of(path, _stat.S_ISREG, 'regular file')
    if st is None:
        return {'exists': False}
    try:
        with open(path, 'rb') as handle:
            content = handle.read()
    except (IOError, OSError) as exc:
        raise SnapshotError('%s: cannot read: %s' % (path, exc.strerror or exc))
    owner, group = _names(st)
    return file_record(st, content, owner, group)


def read_dir_record(path):
    """The record of directory ``path`` as it is now (``{"exists": false}`` when absent)."""
    st = _stat_of(path, _stat.S_ISDIR, 'directory')
    if st is None:
        return {'exists': False}
    owner, group = _names(st)
    return dir_record(st, owner, group)


def capture(layer, files=(), dirs=(), values=None, host=None):
    """A snapshot of ``layer``: the given files and directories as they are now, plus ``values``."""
    if host is None:
        import socket
        host = socket.gethostname()
    snapshot = new_snapshot(layer, host=host)
    for path in files:
        snapshot['files'][path] = read_file_record(path)
    for path in dirs:
        snapshot['dirs'][path] = read_dir_record(path)
    snapshot['values'] = dict(values or {})
    return snapshot


def read_current(snapshot):
    """``(current_files, current_dirs)``: the records, as they are now, of every path the snapshot holds."""
    files = dict((path, read_file_record(path)) for path in sorted(snapshot.get('files') or {}))
    dirs = dict((path, read_dir_record(path)) for path in sorted(snapshot.get('dirs') or {}))
    return files, dirs


# ---------------------------------------------------------------------------
# Validation and migration (pure)

def _parse(text, path):
    if isinstance(text, bytes):
        try:
            text = text.decode('utf-8')
        except UnicodeDecodeError as exc:
            raise SnapshotError('%s: not JSON (not UTF-8 text at byte %d)' % (path, exc.start))
    if not text.strip():
        raise SnapshotError('%s: empty file (truncated?)' % path)
    try:
        return json.loads(text)
    except ValueError as exc:
        if _unclosed(text):
            raise SnapshotError('%s: truncated (the JSON ends after %d characters with an object, array or '
                                'string still open)' % (path, len(text)))
        raise SnapshotError('%s: not JSON (%s)' % (path, exc))


def _unclosed(text):
    """Whether ``text`` starts a JSON object/array and ends with one (or a string in it) still open."""
    if text.lstrip()[:1] not in ('{', '['):
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == '\\':
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in '{[':
            depth += 1
        elif char in '}]':
            depth -= 1
            if depth < 0:
                return False
    return in_string or depth > 0


def _check_owner(value, where, path):
    if value is not None and not isinstance(value, str):
        raise SnapshotError('%s: %s: owner/group must be a name, got %r' % (path, where, value))


def _check_records(data, key, path, kind):
    records = data.get(key)
    if not isinstance(records, dict):
        raise SnapshotError('%s: "%s" must be a mapping of paths to records' % (path, key))
    for name, record in records.items():
        where = '%s[%s]' % (key, name)
        if not isinstance(name, str) or not name.startswith('/'):
            raise SnapshotError('%s: %s: not an absolute path' % (path, where))
        if not isinstance(record, dict) or not isinstance(record.get('exists'), bool):
            raise SnapshotError('%s: %s: a record needs "exists": true or false' % (path, where))
        if not record['exists']:
            continue
        mode = record.get('mode')
        if mode is not None and (not isinstance(mode, str) or not _MODE_RE.match(mode)):
            raise SnapshotError('%s: %s: bad mode %r (octal text such as "0644")' % (path, where, mode))
        _check_owner(record.get('owner'), where, path)
        _check_owner(record.get('group'), where, path)
        if kind == 'file':
            content = record.get('content_b64')
            if not isinstance(content, str):
                raise SnapshotError('%s: %s: "content_b64" is missing' % (path, where))
            try:
                base64.b64decode(content.encode('ascii'), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                raise SnapshotError('%s: %s: "content_b64" is not base64' % (path, where))


def _b64_text(content):
    if content is None:
        return ''
    if not isinstance(content, str):
        raise ValueError('content is not text')
    return base64.b64encode(content.encode('utf-8')).decode('ascii')


def _migrate_memory_v1(data, path):
    """memory_oversub release 1: ``format``, ``taken_at``, ``live``, plain ``content``, dirs as booleans."""
    if not isinstance(data.get('live'), dict) or not isinstance(data.get('files'), dict):
        raise SnapshotError('%s: memory_oversub snapshot (format 1) without "live" or "files"' % path)
    snap = new_snapshot('memory', host=data.get('host'), created=data.get('taken_at'))
    for name, old in data['files'].items():
        if not isinstance(old, dict) or not isinstance(old.get('exists'), bool):
            raise SnapshotError('%s: files[%s]: a record needs "exists": true or false' % (path, name))
        if not old['exists']:
            snap['files'][name] = {'exists': False}
            continue
        try:
            content = _b64_text(old.get('content'))
        except ValueError:
            raise SnapshotError('%s: files[%s]: "content" is not text' % (path, name))
        snap['files'][name] = {'exists': True, 'mode': old.get('mode') or '0644', 'owner': None,
                               'group': None, 'content_b64': content}
    for name, existed in (data.get('dirs') or {}).items():
        if not isinstance(existed, bool):
            raise SnapshotError('%s: dirs[%s]: expected true or false' % (path, name))
        snap['dirs'][name] = {'exists': True, 'mode': None, 'owner': None, 'group': None} if existed \
            else {'exists': False}
    created = data.get('snapshot_dir_created')
    if isinstance(created, str) and created not in snap['dirs']:
        snap['dirs'][created] = {'exists': False}
    values = dict(data['live'])
    if 'zram_generator_installed' in data:
        values['zram_generator_installed'] = data['zram_generator_installed']
    snap['values'] = values
    snap['migrated_from'] = 'memory_oversub format 1'
    return snap


def _migrate_role_v1(data, path):
    """The roles' release 1 files: ``version: 1``, ``role``, base64 ``content``, dirs as booleans."""
    role = data.get('role')
    if role not in LEGACY_ROLE_LAYERS:
        raise SnapshotError('%s: version 1 snapshot of an unknown role %r' % (path, role))
    snap = new_snapshot(LEGACY_ROLE_LAYERS[role], host=data.get('host'), created=data.get('created'))
    files = data.get('files') or {}
    if not isinstance(files, dict):
        raise SnapshotError('%s: "files" must be a mapping of paths to records' % path)
    for name, old in files.items():
        if not isinstance(old, dict) or not isinstance(old.get('exists'), bool):
            raise SnapshotError('%s: files[%s]: a record needs "exists": true or false' % (path, name))
        if not old['exists']:
            snap['files'][name] = {'exists': False}
            continue
        content = old.get('content')
        snap['files'][name] = {'exists': True, 'mode': old.get('mode'), 'owner': old.get('owner'),
                               'group': old.get('group'), 'content_b64': content if content is not None else ''}
    dirs = data.get('dirs') or {}
    if not isinstance(dirs, dict):
        raise SnapshotError('%s: "dirs" must be a mapping of paths to true or false' % path)
    for name, existed in dirs.items():
        if not isinstance(existed, bool):
            raise SnapshotError('%s: dirs[%s]: expected true or false' % (path, name))
        snap['dirs'][name] = {'exists': True, 'mode': None, 'owner': None, 'group': None} if existed \
            else {'exists': False}
    snap['values'] = dict((k, v) for k, v in data.items() if k not in _LEGACY_ROLE_SKIP)
    snap['migrated_from'] = '%s version 1' % role
    return snap


def migrate(data, path):
    """The current-version snapshot from ``data`` in any format this collection has written.

    Current-version data is returned as it is (not validated: ``validate``
    does that). Raises ``SnapshotError`` for data in no known format.
    """
    if not isinstance(data, dict):
        raise SnapshotError('%s: not a kvmlab.host_resources snapshot (a JSON %s, not an object)'
                            % (path, type(data).__name__))
    if data.get('schema') == SCHEMA:
        return data
    if 'schema' in data:
        raise SnapshotError('%s: not a kvmlab.host_resources snapshot (schema %r)' % (path, data.get('schema')))
    if 'format' in data:
        if data.get('format') != LEGACY_MEMORY_FORMAT or data.get('module', LEGACY_MEMORY_MODULE) != LEGACY_MEMORY_MODULE:
            raise SnapshotError('%s: unsupported memory_oversub snapshot format %r (this release reads format 1 and '
                                'schema version %d)' % (path, data.get('format'), VERSION))
        return _migrate_memory_v1(data, path)
    if data.get('version') == 1 and 'role' in data:
        return _migrate_role_v1(data, path)
    raise SnapshotError('%s: not a kvmlab.host_resources snapshot (no "schema", "format" or "version"/"role")' % path)


def validate(data, path, layer=None):
    """The snapshot in ``data`` (JSON text, bytes or a parsed object), migrated to the current version.

    Raises ``SnapshotError("<path>: <problem>")`` for text that is not JSON,
    truncated JSON, a foreign document, another schema version, a snapshot
    of another ``layer`` or malformed records.
    """
    if isinstance(data, (str, bytes)):
        data = _parse(data, path)
    data = migrate(data, path)
    version = data.get('version')
    if version != VERSION:
        raise SnapshotError('%s: snapshot schema version %r is not supported (this release reads version %d)'
                            % (path, version, VERSION))
    found = data.get('layer')
    if not isinstance(found, str) or not found:
        raise SnapshotError('%s: "layer" is missing' % path)
    if layer is not None and found != layer:
        raise SnapshotError('%s: a snapshot of the %s layer, not of %s' % (path, found, layer))
    for key in ('created', 'host'):
        if data.get(key) is not None and not isinstance(data.get(key), str):
            raise SnapshotError('%s: "%s" must be text' % (path, key))
    _check_records(data, 'files', path, 'file')
    _check_records(data, 'dirs', path, 'dir')
    if not isinstance(data.get('values', {}), dict):
        raise SnapshotError('%s: "values" must be a mapping' % path)
    data.setdefault('values', {})
    return data


def dumps(snapshot):
    """The file text of a snapshot (sorted keys, one trailing newline)."""
    return json.dumps(snapshot, indent=2, sort_keys=True) + '\n'


# ---------------------------------------------------------------------------
# Restore plans (pure)

def _differs(want, have):
    """What differs between a recorded existing file and its current record."""
    changed = []
    if not have.get('exists'):
        return ['exists']
    if (want.get('content_b64') or '') != (have.get('content_b64') or ''):
        changed.append('content')
    if want.get('mode') is not None and want.get('mode').zfill(4) != (have.get('mode') or '').zfill(4):
        changed.append('mode')
    for key in ('owner', 'group'):
        if want.get(key) is not None and want.get(key) != have.get(key):
            changed.append(key)
    return changed


def file_restore_plan(snapshot, current_files):
    """The actions that bring every recorded file back, sorted by path.

    ``current_files`` maps each path to its record now (``read_file_record``);
    a path missing there counts as not existing. Actions:
    ``{"action": "write", "path", "content_b64", "mode", "owner", "group", "changed"}``
    (``changed`` lists what differs: exists, content, mode, owner, group),
    ``{"action": "remove", "path"}`` for a file that did not exist before,
    ``{"action": "keep", "path"}`` when nothing differs.
    """
    plan = []
    for path in sorted(snapshot.get('files') or {}):
        want = snapshot['files'][path]
        have = (current_files or {}).get(path) or {'exists': False}
        if not want.get('exists'):
            plan.append({'action': 'remove', 'path': path} if have.get('exists') else {'action': 'keep', 'path': path})
            continue
        changed = _differs(want, have)
        if changed:
            plan.append({'action': 'write', 'path': path, 'content_b64': want.get('content_b64') or '',
                         'mode': want.get('mode'), 'owner': want.get('owner'), 'group': want.get('group'),
                         'changed': changed})
        else:
            plan.append({'action': 'keep', 'path': path})
    return plan


def _depth(path):
    return len([p for p in path.rstrip('/').split('/') if p])


def dir_restore_plan(snapshot, current_dirs):
    """Directory actions, deepest first: ``rmdir_if_empty`` for a directory that did not exist
    before and exists now, ``keep`` otherwise (directories that existed are never touched)."""
    plan = []
    for path in sorted(snapshot.get('dirs') or {}, key=lambda p: (-_depth(p), p)):
        want = snapshot['dirs'][path]
        have = (current_dirs or {}).get(path) or {'exists': False}
        if not want.get('exists') and have.get('exists'):
            plan.append({'action': 'rmdir_if_empty', 'path': path})
        else:
            plan.append({'action': 'keep', 'path': path})
    return plan


def plan_changes(file_plan, dir_plan=()):
    """The paths a plan changes (write/remove/rmdir_if_empty), in plan order."""
    return [a['path'] for a in list(file_plan) + list(dir_plan) if a['action'] != 'keep']


# ---------------------------------------------------------------------------
# Applying (I/O)

def _ids(owner, group):
    uid = gid = -1
    if owner is not None:
        try:
            import pwd
            uid = pwd.getpwnam(owner).pw_uid
        except KeyError:
            if not owner.isdigit():
                raise SnapshotError('%s: no such user' % owner)
            uid = int(owner)
    if group is not None:
        try:
            import grp
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            if not group.isdigit():
                raise SnapshotError('%s: no such group' % group)
            gid = int(group)
    return uid, gid


def write_atomic(path, content, mode=0o644, owner=None, group=None):
    """Write ``content`` (bytes) to ``path`` through a temp file in the same directory and a rename."""
    directory = os.path.dirname(path) or '.'
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        uid, gid = _ids(owner, group)
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            if uid != -1 or gid != -1:
                os.chown(tmp, uid, gid)
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except (IOError, OSError) as exc:
        raise SnapshotError('%s: cannot write: %s' % (path, exc.strerror or exc))


def apply_file_plan(plan):
    """Carry out a ``file_restore_plan``; returns the paths changed."""
    done = []
    for action in plan:
        path = action['path']
        if action['action'] == 'write':
            mode = int(action.get('mode') or '0644', 8)
            write_atomic(path, base64.b64decode(action.get('content_b64') or ''), mode,
                         action.get('owner'), action.get('group'))
            done.append(path)
        elif action['action'] == 'remove':
            try:
                os.unlink(path)
                done.append(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise SnapshotError('%s: cannot remove: %s' % (path, exc.strerror or exc))
    return done


def apply_dir_plan(plan):
    """Carry out a ``dir_restore_plan`` (in its order); returns the directories removed.

    A directory that is not empty stays (something else lives there now).
    """
    done = []
    for action in plan:
        if action['action'] != 'rmdir_if_empty':
            continue
        try:
            os.rmdir(action['path'])
            done.append(action['path'])
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                raise SnapshotError('%s: cannot remove: %s' % (action['path'], exc.strerror or exc))
    return done


# ---------------------------------------------------------------------------
# The snapshot file (I/O)

def load(path, layer=None):
    """Read and validate the snapshot at ``path`` (migrated to the current version)."""
    try:
        with open(path, 'rb') as handle:
            text = handle.read()
    except (IOError, OSError) as exc:
        raise SnapshotError('%s: cannot read: %s' % (path, exc.strerror or exc))
    return validate(text, path, layer)


def save(path, snapshot):
    """Write ``snapshot`` to ``path`` (0600, atomically); False when ``path`` already exists.

    Never overwrites: the file appears through a hard link of a complete temp
    file, so a concurrent writer cannot replace it either. A missing
    directory is created 0700.
    """
    if os.path.lexists(path):
        return False
    directory = os.path.dirname(path) or '.'
    text = dumps(snapshot).encode('utf-8')
    try:
        created = missing_ancestors(path)
        if created:
            os.makedirs(directory, 0o700)
            os.chmod(directory, 0o700)
            _write_created_marker(directory, created)
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    return False
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # a filesystem without hard links: check, then rename
                if os.path.lexists(path):
                    return False
                os.rename(tmp, path)
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    except (IOError, OSError) as exc:
        raise SnapshotError('%s: cannot write: %s' % (path, exc.strerror or exc))
    return True


def discard(path):
    """Remove the snapshot at ``path`` (see ``retire``); True when it was there."""
    existed = os.path.lexists(path)
    retire(path)
    return existed


def retire(path, dir_plan=(), check=False, gone=()):
    """Remove the snapshot at ``path`` once its rollback is done, then the directories
    the rollback takes away; returns those directories, deepest first.

    The directories are those of ``dir_plan`` (``dir_restore_plan``: the ones
    that did not exist before the apply, each only when empty) and those
    ``save`` created, once the snapshot directory holds nothing but its
    marker: so the last layer rolled back, in whatever order, leaves the host
    without them, as it was before the first apply. ``check``: change
    nothing, return what would go, given the paths in ``gone`` that the
    rollback removes before (its file plan's removals).
    """
    directory = os.path.dirname(path) or '.'
    if check:
        return _predict_retire(path, dir_plan, gone)
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise SnapshotError('%s: cannot remove: %s' % (path, exc.strerror or exc))
    removed = _remove_created_dirs(directory)
    removed.extend(d for d in apply_dir_plan(dir_plan) if d not in removed)
    return sorted(removed, key=lambda p: (-_depth(p), p))


def _listing(directory):
    try:
        return [os.path.join(directory, entry) for entry in sorted(os.listdir(directory))]
    except OSError:
        return None


def _predict_retire(path, dir_plan, gone):
    directory = os.path.dirname(path) or '.'
    gone = set(gone) | set([path])
    candidates = [a['path'] for a in dir_plan if a['action'] == 'rmdir_if_empty']
    marker = os.path.join(directory, CREATED_MARKER)
    entries = _listing(directory) or []
    if marker in entries and all(e in gone for e in entries if e != marker):
        try:
            candidates.extend(created_dirs_to_remove(directory, [CREATED_MARKER], _read_marker(directory)))
            gone.add(marker)
        except (IOError, OSError):
            pass
    removed = []
    for candidate in sorted(set(candidates), key=lambda p: (-_depth(p), p)):
        entries = _listing(candidate)
        if entries is not None and all(e in gone for e in entries):
            removed.append(candidate)
            gone.add(candidate)
    return removed


#: The file ``save`` leaves in a snapshot directory it created: the directories it created, as JSON.
CREATED_MARKER = '.kvmlab-created-dirs'


def missing_dirs(directory):
    """``directory`` and its ancestors that do not exist, outermost first (the order to create them in)."""
    found = []
    directory = directory.rstrip('/')
    while directory and not os.path.isdir(directory):
        found.insert(0, directory)
        directory = os.path.dirname(directory).rstrip('/')
    return found


def missing_ancestors(path):
    """The directories above ``path`` that do not exist, deepest first (``makedirs`` would create them)."""
    return list(reversed(missing_dirs(os.path.dirname(path))))


def created_dirs_to_remove(directory, entries, marker_text):
    """Which directories to remove once ``directory`` holds ``entries`` (names), pure.

    Nothing unless the only entry left is the marker and its text is a JSON
    list of absolute paths, each ``directory`` or one of its ancestors;
    otherwise those paths, deepest first.
    """
    if list(entries) != [CREATED_MARKER]:
        return []
    try:
        listed = json.loads(marker_text)
    except ValueError:
        return []
    directory = os.path.normpath(directory)
    if not isinstance(listed, list):
        return []
    allowed = []
    for item in listed:
        if not isinstance(item, str) or not os.path.isabs(item):
            return []
        item = os.path.normpath(item)
        if item != directory and not directory.startswith(item.rstrip('/') + '/'):
            return []
        allowed.append(item)
    return sorted(set(allowed), key=lambda p: (-_depth(p), p))


def _write_created_marker(directory, created):
    with open(os.path.join(directory, CREATED_MARKER), 'w') as handle:
        handle.write(json.dumps(sorted(created, key=lambda p: (-_depth(p), p))) + '\n')


def _read_marker(directory):
    with open(os.path.join(directory, CREATED_MARKER)) as handle:
        return handle.read()


def _remove_created_dirs(directory):
    """Remove the directories ``save`` created once ``directory`` holds only its marker."""
    try:
        entries = sorted(os.listdir(directory))
        if entries != [CREATED_MARKER]:
            return []
        text = _read_marker(directory)
    except (IOError, OSError):
        return []
    doomed = created_dirs_to_remove(directory, entries, text)
    if not doomed:
        return []
    removed = []
    try:
        os.unlink(os.path.join(directory, CREATED_MARKER))
    except OSError:
        return []
    for path in doomed:
        try:
            os.rmdir(path)
            removed.append(path)
        except OSError:
            break
    return removed
