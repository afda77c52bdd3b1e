# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_lock with real ansible-playbook runs on a local connection (no lab, no libvirt).

Each run is a tiny playbook that takes the lock, appends "<tag> <n> <time>"
lines to a file with pauses in between, and releases the lock in ``always``.
Every ansible-playbook is started in a session of its own and tracked by
pid; at the end of each test every process of those sessions and every
holder the tests saw is stopped by pid (start time checked), never by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

PLAYBOOK = r'''
- name: Hold the host lock while writing
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Take the lock
      kvmlab.host_resources.host_lock:
        path: "{{ lock_path }}"
        owner: "run {{ tag }}"
        timeout: "{{ wait | int }}"
      register: lock
    - name: Tell the test who holds it
      ansible.builtin.copy:
        dest: "{{ info_dir }}/{{ tag }}.json"
        content: "{{ lock | to_json }}"
        mode: "0644"
      check_mode: false
    - name: Stay a while without releasing
      ansible.builtin.pause:
        seconds: "{{ linger | int }}"
      when: (linger | default(0) | int) > 0
    - name: Write while holding it
      when: not (keep | default(false) | bool)
      block:
        - name: Append lines with pauses
          ansible.builtin.shell: |
            for n in 1 2 3 4; do echo "{{ tag }} $n $(date +%s.%N)" >> {{ out }}; sleep {{ pause | default(0.3) }}; done
          changed_when: true
      always:
        - name: Release the lock
          kvmlab.host_resources.host_lock:
            path: "{{ lock_path }}"
            state: released
            token: "{{ lock.token }}"
'''


def _playbook_command():
    command = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    return command if os.path.exists(command) else shutil.which('ansible-playbook')


def _stat(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            text = handle.read()
    except (IOError, OSError):
        return None
    fields = text[text.rfind(')') + 2:].split()
    return {'state': fields[0], 'session': int(fields[3]), 'starttime': int(fields[19])}


def _alive(pid, starttime=None):
    info = _stat(pid)
    return info is not None and info['state'] not in ('Z', 'X') and (
        starttime is None or info['starttime'] == starttime)


def _wait(predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


class Runs(object):
    """Starts ansible-playbook runs and stops everything they leave, by pid."""

    def __init__(self, work):
        self.work = work
        self.lock_path = os.path.join(work, 'host.lock')
        self.out = os.path.join(work, 'out.txt')
        self.info_dir = os.path.join(work, 'info')
        os.makedirs(self.info_dir)
        self.playbook = os.path.join(work, 'lock.yml')
        with open(self.playbook, 'w') as handle:
            handle.write(PLAYBOOK)
        self.procs = []
        self.holders = []
        self.orphans = []

    def start(self, tag, wait=60, args=(), **extra):
        extra_vars = dict(lock_path=self.lock_path, out=self.out, info_dir=self.info_dir, tag=tag, wait=wait,
                          ansible_python_interpreter=sys.executable)
        extra_vars.update(extra)
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
                   ANSIBLE_LOCAL_TEMP=os.path.join(self.work, 'tmp-' + tag),
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
        log = open(os.path.join(self.work, tag + '.log'), 'w')
        proc = subprocess.Popen([_playbook_command(), '-i', 'localhost,', '-c', 'local', '-e', json.dumps(extra_vars)]
                                + list(args) + [self.playbook], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, tag):
        with open(os.path.join(self.work, tag + '.log')) as handle:
            return handle.read()

    def info(self, tag):
        path = os.path.join(self.info_dir, tag + '.json')
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            data = json.load(handle)
        if data.get('holder'):
            self.holders.append((data['holder']['pid'], data['holder']['starttime']))
        return data

    def record(self):
        with open(self.lock_path) as handle:
            text = handle.read().strip()
        if not text:
            return None
        data = json.loads(text)
        self.holders.append((data['pid'], data['starttime']))
        return data

    def lines(self):
        if not os.path.exists(self.out):
            return []
        with open(self.out) as handle:
            return [line.split() for line in handle if line.strip()]

    def descendants(self, pid):
        """(pid, starttime) of every process below ``pid`` now (Ansible's workers are session leaders)."""
        children = {}
        for entry in os.listdir('/proc'):
            if entry.isdigit():
                try:
                    with open('/proc/%s/stat' % entry) as handle:
                        text = handle.read()
                except (IOError, OSError):
                    continue
                fields = text[text.rfind(')') + 2:].split()
                children.setdefault(int(fields[1]), []).append((int(entry), int(fields[19])))
        found, todo = [], [pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child[0])
        return found

    def kill(self, proc):
        """SIGKILL one ansible-playbook; its workers keep running their task, tracked for cleanup."""
        below = self.descendants(proc.pid)
        self.orphans.extend(below)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return below

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                self.orphans.extend(self.descendants(proc.pid))
        sessions = set(proc.pid for proc in self.procs)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for entry in os.listdir('/proc'):
            if entry.isdigit():
                info = _stat(int(entry))
                if info and info['session'] in sessions and info['state'] != 'Z':
                    try:
                        os.kill(int(entry), signal.SIGKILL)
                    except OSError:
                        pass
        for pid, starttime in self.orphans:
            if _alive(pid, starttime):
                os.kill(pid, signal.SIGKILL)
        for pid, starttime in self.holders:
            if _alive(pid, starttime):
                os.kill(pid, signal.SIGTERM)


@pytest.fixture
def runs():
    if not _playbook_command():
        pytest.skip('ansible-playbook is not installed')
    work = tempfile.mkdtemp(prefix='kvmlab-hostlock-')
    tracker = Runs(work)
    try:
        yield tracker
    finally:
        tracker.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def _blocks(lines):
    """Tags in the order their runs wrote, one entry per uninterrupted stretch."""
    order = []
    for tag, _n, _stamp in lines:
        if not order or order[-1] != tag:
            order.append(tag)
    return order


def test_two_concurrent_runs_never_interleave(runs):
    first = runs.start('a', pause=0.5)
    second = runs.start('b', pause=0.5)
    assert first.wait(180) == 0, runs.log('a')
    assert second.wait(180) == 0, runs.log('b')
    lines = runs.lines()
    assert len(lines) == 8
    assert sorted(_blocks(lines)) == ['a', 'b'], lines  # each run wrote in one stretch
    infos = [runs.info('a'), runs.info('b')]
    assert all(info['acquired'] and info['changed'] is False for info in infos)
    assert max(info['waited'] for info in infos) > 1.0  # the later one waited for the other's release
    assert infos[0]['holder']['pid'] != infos[1]['holder']['pid']
    for info in infos:  # both holders are gone, the lock file is empty, not removed
        assert not _alive(info['holder']['pid'], info['holder']['starttime'])
    assert os.path.exists(runs.lock_path) and runs.record() is None


def test_short_timeout_fails_naming_the_holder(runs):
    holder_run = runs.start('a', pause=2)
    assert _wait(lambda: runs.info('a') is not None, 60), runs.log('a')
    holder = runs.info('a')['holder']
    started = time.time()
    waiting = runs.start('b', wait=2)
    assert waiting.wait(120) != 0
    log = runs.log('b')
    assert 'is held by another run: holder pid %d, owner %r' % (holder['pid'], 'run a') in log, log
    assert 'waited 2 s' in log and holder['since'] in log
    assert time.time() - started < 60
    assert holder_run.wait(120) == 0, runs.log('a')
    assert _blocks(runs.lines()) == ['a']  # b never got in


def test_killed_run_does_not_block_the_next(runs):
    """SIGKILL of ansible-playbook: its orphaned worker finishes the running task, then the lock frees."""
    killed = runs.start('a', pause=1.5)  # the writing task lasts about 6 s
    assert _wait(lambda: runs.info('a') is not None and runs.lines(), 60), runs.log('a')
    holder = runs.info('a')['holder']
    assert holder['watch']['kind'] == 'local' and holder['watch']['pid'] == killed.pid
    runs.kill(killed)
    killed_at = time.time()
    next_run = runs.start('b', wait=60, pause=0.1)
    assert _wait(lambda: not _alive(holder['pid'], holder['starttime']), 15)  # its last task ended
    assert next_run.wait(120) == 0, runs.log('b')
    lines = runs.lines()
    assert _blocks(lines) == ['a', 'b'], lines  # the orphaned task's lines all come before b's
    assert [n for tag, n, _stamp in lines if tag == 'a'] == ['1', '2', '3', '4']
    info = runs.info('b')
    assert info['acquired'] and info['holder']['since_epoch'] - killed_at < 15  # not max_hold


def test_killed_run_with_its_workers_frees_at_once(runs):
    """SIGKILL of ansible-playbook and of every process below it: nothing of the run is left."""
    killed = runs.start('a', pause=0.2, keep=True, linger=60)
    assert _wait(lambda: runs.info('a') is not None, 60), runs.log('a')
    holder = runs.info('a')['holder']
    time.sleep(1)  # now in the pause task
    for pid, starttime in runs.kill(killed):
        if _alive(pid, starttime):
            os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: not _alive(holder['pid'], holder['starttime']), 5)
    after = runs.start('b', wait=30, pause=0.1)
    assert after.wait(120) == 0, runs.log('b')
    assert runs.info('b')['waited'] < 3.0


def test_holder_never_outlives_its_run(runs):
    run = runs.start('a', keep=True)  # takes the lock and never releases it
    assert run.wait(120) == 0, runs.log('a')
    holder = runs.info('a')['holder']
    assert _wait(lambda: not _alive(holder['pid'], holder['starttime']), 5)
    after = runs.start('b', wait=5, pause=0.1)
    assert after.wait(120) == 0, runs.log('b')
    assert runs.info('b')['waited'] < 1.0


def test_check_mode_takes_no_lock_and_does_not_wait(runs):
    holder_run = runs.start('a', pause=3)
    assert _wait(lambda: runs.info('a') is not None, 60), runs.log('a')
    holder = runs.info('a')['holder']
    checked = runs.start('c', wait=60, args=['--check'])
    assert checked.wait(120) == 0, runs.log('c')
    info = runs.info('c')
    assert info['would'] == 'wait' and info['acquired'] is False and info['holder']['pid'] == holder['pid']
    assert _alive(holder['pid'], holder['starttime']) and runs.record()['pid'] == holder['pid']
    assert 'is held by another run (holder pid %d)' % holder['pid'] in runs.log('c')
    assert holder_run.wait(120) == 0, runs.log('a')
