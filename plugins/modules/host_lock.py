#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_lock
short_description: One run at a time per host, for the whole of a role entry point
version_added: 0.2.0
description:
  - O(state=acquired) takes an exclusive C(flock) on O(path) and keeps it after the task
    ends, in a small detached holder process (shown as C(kvmlab-hostlock) by C(ps)), so
    that the lock lasts across all the tasks of a role entry point. The holder writes
    who holds the lock (its pid, O(owner), since when, the run it belongs to) into the
    lock file as one JSON line.
  - When another run holds the lock, the task waits up to O(timeout) seconds, then
    fails with a message naming the holder's pid, owner and since when.
  - O(state=released) with the same O(token) makes the holder exit; the lock file stays
    (it is never removed; the holder empties it).
  - Re-entrant per O(token). An O(state=acquired) with a token whose holder is alive only
    counts one more entry (RV(depth)); each O(state=released) counts one down, and the
    holder exits at 0. Nested entry points of one run (a role that includes another
    role's entry point) therefore keep the lock until the outermost releases it. Several
    inventory hosts of one run that are one machine (local connections) share the lock
    the same way when they share the token.
  - A lock never outlives its run. The kernel drops the C(flock) when the holder dies,
    whatever kills it, and the holder exits by itself when the process that represents
    the run on this host ends, or after O(max_hold) seconds, whichever comes first.
  - 'Which process represents the run (when O(watch_pid) is not given): walking up the
    parent chain from the module (C(/proc/<pid>/stat)), the nearest ancestor that is
    either an sshd process (comm C(sshd) or C(sshd-session)): under C(ssh) the
    connection''s session process; or an Ansible controller (comm or command line
    C(ansible*)): under C(ansible_connection=local) the task''s worker, from which the
    walk climbs on to the topmost ancestor with the same command line, the main
    C(ansible-playbook) process. C(sudo), C(su) and shells in between are passed. It is
    identified by pid and start time, so a reused pid does not keep a lock alive.
    Under a local connection, when the main process is killed, the worker that runs the
    current task finishes that task as an orphan (Ansible''s workers are session leaders);
    the holder keeps the lock until no such orphaned worker of the run is left, so the
    killed run''s last task never overlaps the next run.
    When none is found (other connection plugins), the module warns and only
    O(max_hold) bounds the lock.'
  - 'Under C(ssh) with C(ControlPersist) (Ansible''s default) the session process is the
    master connection''s: after a run is killed on the controller, its lock frees when
    that master connection closes, at most C(ControlPersist) idle seconds later. The same
    holds the other way: a task that lasts longer than C(ControlPersist) on another host
    of the play may close this host''s idle master connection and with it the lock;
    O(state=released) then reports RV(held=false) with a warning.'
  - Taking the lock is not a change of the host's configuration, so this module always
    reports C(changed=false).
author:
  - kvmlab maintainers (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: full
    details:
      - Check mode takes no lock and changes no count. It reports what would happen
        (RV(would)) and, when another run holds the lock, who holds it, without waiting.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details:
      - Linux only (C(/proc), C(flock), abstract unix sockets).
options:
  state:
    description:
      - V(acquired) takes the lock for O(token) (or enters it once more); V(released) leaves it once.
    type: str
    choices: [acquired, released]
    default: acquired
  path:
    description:
      - The lock file. Created (mode 0644) when missing, never removed. Its directory must exist.
      - Every run that must exclude the others uses the same path.
    type: path
    default: /run/lock/kvmlab-host-resources.lock
  token:
    description:
      - Identifies the run. Generate it once per playbook run (for example with
        C(run_once) and the C(ansible.builtin.password) lookup on C(/dev/null)) and pass
        the same value to every O(state=acquired) and O(state=released) of the run.
      - Optional with O(state=acquired), which then generates one and returns it as RV(token).
        Required with O(state=released).
      - At least 16 characters. Only root or the holder's own user may talk to a holder.
    type: str
  owner:
    description:
      - A label for other runs' messages, for example the play, the role entry point and
        the controller user. Written into the lock file.
      - Default C(uid <uid>), plus the ssh client address when there is one.
    type: str
  timeout:
    description:
      - Seconds to wait for another run's lock before failing. V(0) fails at once.
    type: int
    default: 300
  max_hold:
    description:
      - Seconds after which the holder exits by itself, whatever the run does.
      - Must cover the longest entry point; a nested re-entry does not extend it.
    type: int
    default: 3600
  prerequisites:
    description:
      - With O(state=acquired), check the host first, with the options of
        M(kvmlab.host_resources.host_prerequisites) (C(systemd), C(cgroup2), C(cgroup_controllers),
        C(root_user), C(python_modules), C(executables), C(search_path), C(packages), C(root)),
        and fail with its message, taking no lock, when something is missing. One task instead
        of two (each task costs a Python start on the host).
    type: dict
  installed:
    description:
      - With O(state=acquired), Debian or Ubuntu package names whose installed version is read
        from dpkg's status file and returned as RV(packages) and RV(not_installed), so the caller
        installs only what is missing. Reading them changes nothing and never fails the task.
    type: list
    elements: str
    default: []
  watch_pid:
    description:
      - The process whose end ends the lock, instead of the one found by walking up the
        parent chain. V(0) watches nothing (only O(max_hold) bounds the lock).
      - Ignored when the lock is re-entered (the holder keeps the process it watches).
    type: int
notes:
  - The lock excludes other runs that use this module with the same O(path); it does not
    stop anybody else from changing the host.
seealso:
  - module: kvmlab.host_resources.host_prerequisites
'''

EXAMPLES = r'''
- name: Identify this playbook run (once, shared by every host of the play)
  ansible.builtin.set_fact:
    __kvmlab_host_lock_token: "{{ lookup('ansible.builtin.password', '/dev/null', chars=['ascii_letters', 'digits'], length=32) }}"
  run_once: true
  when: __kvmlab_host_lock_token is not defined

- name: One run at a time on this host
  kvmlab.host_resources.host_lock:
    token: "{{ __kvmlab_host_lock_token }}"
    owner: "{{ lookup('ansible.builtin.env', 'USER') }}: {{ ansible_play_name }} / shared_execution_pool apply"
    timeout: 300

- name: Change the host
  block:
    - name: Apply
      ansible.builtin.debug:
        msg: "... the entry point's tasks ..."
  always:
    - name: Let the next run in
      kvmlab.host_resources.host_lock:
        state: released
        token: "{{ __kvmlab_host_lock_token }}"
'''

RETURN = r'''
found:
  description: What O(prerequisites) found (RV(kvmlab.host_resources.host_prerequisites#module:found)).
  returned: with O(prerequisites)
  type: dict
  sample: {systemd: {pid1: systemd, ok: true}}
missing:
  description: One line per missing prerequisite (the task then fails without locking).
  returned: with O(prerequisites)
  type: list
  elements: str
  sample: []
packages:
  description: The installed version of each of O(installed), null when not installed; null as a whole without a dpkg database.
  returned: with O(installed)
  type: dict
  sample: {python3-libvirt: 9.0.0-1}
not_installed:
  description: The names of O(installed) that are not installed (all of them without a dpkg database).
  returned: with O(installed)
  type: list
  elements: str
  sample: []
token:
  description: The run's token (O(token), or the one generated for it).
  returned: always
  type: str
  sample: 4bq0ZfX1yJm2hP7sK9dLw3eR5tN8uVa6
lock_file:
  description: The lock file (O(path)).
  returned: always
  type: str
  sample: /run/lock/kvmlab-host-resources.lock
acquired:
  description: This call took the lock and started a holder (false when it re-entered, in check mode, and for V(released)).
  returned: always
  type: bool
  sample: true
reentered:
  description: The run already held the lock; this call only counted one more entry.
  returned: always
  type: bool
  sample: false
released:
  description: This call ended the holder; the lock is free when the task returns.
  returned: always
  type: bool
  sample: false
held:
  description: With V(released), whether this run held the lock when the call began.
  returned: always
  type: bool
  sample: true
depth:
  description: Entries of the run still counted after this call (0 when the lock is not held by it).
  returned: always
  type: int
  sample: 1
waited:
  description: Seconds spent waiting for another run's lock.
  returned: always
  type: float
  sample: 0.0
would:
  description:
    - In check mode, what O(state=acquired) would do - V(acquire), V(reenter) or V(wait) (another run
      holds the lock) - and what O(state=released) would do - V(release), V(leave) (an outer entry
      stays) or V(nothing).
    - Outside check mode the value describes what was done the same way.
  returned: always
  type: str
  sample: acquire
holder:
  description: The holder record of this run's lock, or of the other run's that holds it; null when none.
  returned: always
  type: dict
  contains:
    pid:
      description: The holder process.
      type: int
    starttime:
      description: Its start time in clock ticks since boot (C(/proc/<pid>/stat) field 22).
      type: int
    owner:
      description: O(owner) of the run that took the lock.
      type: str
    since:
      description: When the lock was taken, ISO 8601 UTC.
      type: str
    since_epoch:
      description: The same as seconds since the epoch.
      type: float
    max_hold_until:
      description: When the holder exits at the latest, ISO 8601 UTC.
      type: str
    watch:
      description: The process that represents the run (pid, comm, starttime, kind C(ssh), C(local) or C(given)), or null.
      type: dict
    client:
      description: The ssh client address of the run that took the lock, or null.
      type: str
    token_sha256:
      description: SHA-256 of the run's token (the token itself is not written).
      type: str
    version:
      description: Record format version (1).
      type: int
  sample:
    pid: 48211
    starttime: 9912345
    owner: "alice: Shared execution pool / shared_execution_pool apply"
    since: "2026-12-02T10:00:00Z"
    since_epoch: 1796205600.0
    max_hold_until: "2026-12-02T11:00:00Z"
    watch: {pid: 48102, comm: sshd, starttime: 9911002, kind: ssh}
    client: 10.0.0.5
    token_sha256: 3f1c...
    version: 1
watch:
  description: With V(acquired), the process that was found (or given) to represent the run; null when none.
  returned: always
  type: dict
  sample: {pid: 48102, comm: sshd, starttime: 9911002, kind: ssh}
'''

import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils._guarded import (
    GuardFailed,
    check_first,
    lock_problem,
    not_held_warning,
    take,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._lock import (
    LockBusy,
    LockError,
    release,
    request,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', choices=['acquired', 'released'], default='acquired'),
            path=dict(type='path', default='/run/lock/kvmlab-host-resources.lock'),
            token=dict(type='str', no_log=False),
            owner=dict(type='str'),
            timeout=dict(type='int', default=300),
            max_hold=dict(type='int', default=3600),
            watch_pid=dict(type='int'),
            prerequisites=dict(type='dict'),
            installed=dict(type='list', elements='str', default=[]),
        ),
        required_if=[('state', 'released', ['token'])],
        supports_check_mode=True,
    )
    params = module.params
    path = params['path']
    token = params['token'] or uuid.uuid4().hex
    problem = lock_problem(path, token, params['timeout'], params['max_hold'])
    if problem:
        module.fail_json(msg=problem)
    result = dict(changed=False, token=token, lock_file=path, acquired=False, reentered=False, released=False,
                  held=False, depth=0, waited=0.0, holder=None, watch=None, would=None)
    try:
        if params['state'] == 'acquired':
            check_first({'prerequisites': params['prerequisites'], 'installed': params['installed']}, result)
            result.update(take(path, token, params['owner'], params['timeout'], params['max_hold'], module.check_mode,
                               module.warn, params['watch_pid']))
            module.exit_json(**result)
        if module.check_mode:
            reply = request(path, 'ping', token)
            held = bool(reply and reply.get('ok'))
            depth = reply['depth'] if held else 0
            result.update(held=held, depth=max(depth - 1, 0) if held else 0,
                          holder=reply.get('holder') if reply else None,
                          would=('release' if depth == 1 else 'leave') if held else 'nothing')
            module.exit_json(**result)
        done = release(path, token)
        result.update(done, would=('release' if done['released'] else 'leave') if done['held'] else 'nothing')
        if not done['held']:
            module.warn(not_held_warning(path))
        module.exit_json(**result)
    except GuardFailed as exc:
        module.fail_json(msg=str(exc), **result)
    except LockBusy as exc:
        result['holder'] = exc.holder
        result['waited'] = float(params['timeout'])
        module.fail_json(msg=str(exc), **result)
    except LockError as exc:
        module.fail_json(msg=str(exc), **result)
    except (IOError, OSError) as exc:
        module.fail_json(msg='host lock %s: %s' % (path, exc), **result)


if __name__ == '__main__':
    main()
