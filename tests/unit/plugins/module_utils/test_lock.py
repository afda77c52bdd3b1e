"""_lock: the pure parts rule by rule, then a real holder process on a temporary lock file."""
import json
import os
import signal
import subprocess
import time

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _lock as lk

TOKEN = 'a' * 32
OTHER = 'b' * 32


def stat_line(pid, comm, ppid, session=7, starttime=1000, state='S'):
    rest = [state, str(ppid), '1', str(session)] + ['0'] * 15 + [str(starttime)] + ['0'] * 30
    return '%d (%s) %s\n' % (pid, comm, ' '.join(rest))


def test_parse_stat_comm_with_spaces_and_parens_and_nul():
    info = lk.parse_stat(stat_line(42, 'we (ird) name', 7, session=9, starttime=5555) + '\0')
    assert info == {'pid': 42, 'comm': 'we (ird) name', 'state': 'S', 'ppid': 7, 'session': 9, 'starttime': 5555}


def test_parse_stat_rejects_truncated():
    with pytest.raises(ValueError):
        lk.parse_stat('42 (x) S 1 2')


@pytest.mark.parametrize('comm, argv, expected', [
    ('ansible-playboo', ['/usr/bin/python3', '/usr/bin/ansible-playbook'], True),
    ('python3', ['/usr/bin/python3', '/venv/bin/ansible-playbook', 'site.yml'], True),
    ('python3', ['python3', '-m', 'ansible', 'playbook'], True),
    ('ansible', ['/usr/bin/ansible', 'all', '-m', 'ping'], True),
    ('python3', ['/usr/bin/python3', '/root/.ansible/tmp/x/AnsiballZ_host_lock.py'], False),
    ('sh', ['/bin/sh', '-c', '/usr/bin/python3 /root/.ansible/tmp/ansible-tmp-1/AnsiballZ_x.py'], False),
    ('pytest', ['python', '-m', 'pytest'], False),
])
def test_is_controller(comm, argv, expected):
    assert lk.is_controller(comm, argv) is expected


def table(*procs):
    byid = dict((proc['pid'], proc) for proc in procs)
    return byid.get


def proc(pid, ppid, comm, cmdline, starttime=None):
    return {'pid': pid, 'ppid': ppid, 'comm': comm, 'cmdline': cmdline, 'starttime': starttime or pid * 10,
            'state': 'S'}


PLAYBOOK_ARGV = ['/venv/bin/python', '/venv/bin/ansible-playbook', '-i', 'inv', 'site.yml']


def test_find_run_ssh_through_sudo_and_shells():
    read = table(proc(900, 1, 'sshd', ['sshd: /usr/sbin/sshd -D']),
                 proc(950, 900, 'sshd', ['sshd: root [priv]']),
                 proc(960, 950, 'sshd', ['sshd: deploy@notty']),
                 proc(970, 960, 'sh', ['/bin/sh', '-c', 'sudo -H -S -n -u root /bin/sh -c ...']),
                 proc(971, 970, 'sudo', ['sudo', '-H', '-S', '-n']),
                 proc(972, 971, 'sh', ['/bin/sh', '-c', '/usr/bin/python3']),
                 proc(973, 972, 'python3', ['/usr/bin/python3']))
    assert lk.find_run(972, read) == {'pid': 960, 'comm': 'sshd', 'starttime': 9600, 'kind': 'ssh'}


def test_find_run_openssh_98_session_process():
    read = table(proc(900, 1, 'sshd', ['sshd']), proc(960, 900, 'sshd-session', ['sshd-session: root@notty']),
                 proc(970, 960, 'sh', ['/bin/sh']))
    assert lk.find_run(970, read)['pid'] == 960


def test_find_run_local_climbs_from_worker_to_main():
    read = table(proc(500, 400, 'bash', ['bash']),
                 proc(600, 500, 'ansible-playboo', PLAYBOOK_ARGV),
                 proc(650, 600, 'ansible-playboo', PLAYBOOK_ARGV),
                 proc(660, 650, 'sh', ['/bin/sh', '-c', "/bin/sh -c '/venv/bin/python ...AnsiballZ'"]),
                 proc(661, 660, 'sh', ['/bin/sh', '-c', '/venv/bin/python ...AnsiballZ']))
    assert lk.find_run(661, read) == {'pid': 600, 'comm': 'ansible-playboo', 'starttime': 6000, 'kind': 'local'}


def test_find_run_local_under_an_operator_ssh_login_is_the_playbook():
    read = table(proc(300, 1, 'sshd', ['sshd: alice@pts/0']),
                 proc(500, 300, 'bash', ['-bash']),
                 proc(600, 500, 'ansible-playboo', PLAYBOOK_ARGV),
                 proc(650, 600, 'ansible-playboo', PLAYBOOK_ARGV),
                 proc(660, 650, 'sh', ['/bin/sh']))
    assert lk.find_run(660, read)['pid'] == 600


def test_find_run_stops_below_a_different_controller():
    navigator = ['/venv/bin/python', '/venv/bin/ansible-navigator', 'run']
    read = table(proc(550, 1, 'ansible-navigat', navigator),
                 proc(600, 550, 'ansible-playboo', PLAYBOOK_ARGV),
                 proc(650, 600, 'ansible-playboo', PLAYBOOK_ARGV),
                 proc(660, 650, 'sh', ['/bin/sh']))
    assert lk.find_run(660, read)['pid'] == 600


def test_find_run_none_when_nothing_represents_the_run():
    read = table(proc(10, 1, 'containerd-shim', ['containerd-shim']), proc(20, 10, 'sh', ['/bin/sh']))
    assert lk.find_run(20, read) is None
    assert lk.find_run(99, read) is None


def test_orphan_workers_only_the_killed_runs_workers():
    main = proc(600, 500, 'ansible-playboo', PLAYBOOK_ARGV, starttime=6000)
    orphan = proc(650, 1, 'ansible-playboo', PLAYBOOK_ARGV, starttime=6500)
    other_main = proc(700, 500, 'ansible-playboo', PLAYBOOK_ARGV, starttime=7000)
    other_worker = proc(710, 700, 'ansible-playboo', PLAYBOOK_ARGV, starttime=7100)
    older = proc(590, 1, 'ansible-playboo', PLAYBOOK_ARGV, starttime=5900)
    different = proc(720, 1, 'ansible-playboo', ['/venv/bin/python', '/venv/bin/ansible-playbook', 'x.yml'],
                     starttime=7200)
    assert lk.orphan_workers(main, [main, orphan, other_main, other_worker, older, different]) == [650]
    zombie = dict(orphan, state='Z')
    assert lk.orphan_workers(main, [main, zombie]) == []


def test_record_round_trip_and_trailing_bytes():
    watch = {'pid': 600, 'comm': 'sshd', 'starttime': 6000, 'kind': 'ssh'}
    text = lk.holder_record(123, 4567, TOKEN, 'alice: site', 1796205600.0, 3600, watch, '10.0.0.5')
    record = lk.parse_record(text + '{"old": "bytes"')
    assert record['pid'] == 123 and record['starttime'] == 4567 and record['owner'] == 'alice: site'
    assert record['since'] == '2026-12-02T10:00:00Z' and record['max_hold_until'] == '2026-12-02T11:00:00Z'
    assert record['token_sha256'] == lk.token_digest(TOKEN) and TOKEN not in text
    assert record['watch'] == watch and record['client'] == '10.0.0.5'


@pytest.mark.parametrize('text', ['', '\n', 'garbage', '[1, 2]', '{"version": 9, "pid": 1}', '{"version": 1}'])
def test_parse_record_foreign_or_empty(text):
    assert lk.parse_record(text) is None


def test_busy_message_names_pid_owner_since_and_how_it_frees():
    watch = {'pid': 600, 'comm': 'sshd', 'starttime': 6000, 'kind': 'ssh'}
    record = json.loads(lk.holder_record(123, 4567, TOKEN, 'alice: site', 1796205600.0, 3600, watch, '10.0.0.5'))
    message = lk.busy_message('/run/lock/x.lock', record, 300.4, 1796205642.0)
    assert message == ("host lock /run/lock/x.lock is held by another run: holder pid 123, owner 'alice: site', "
                       "since 2026-12-02T10:00:00Z (42 s ago), from 10.0.0.5; waited 300 s; it frees itself "
                       "when its run ends (ssh process 600 sshd) or at 2026-12-02T11:00:00Z (max_hold)")
    assert 'no holder record' in lk.busy_message('/x', None, 1, 0)


def test_socket_name_is_abstract_and_per_path():
    assert lk.socket_name('/run/lock/a.lock').startswith(b'\0kvmlab-host-lock-')
    assert lk.socket_name('/run/lock/a.lock') == lk.socket_name('/run/lock/./a.lock')
    assert lk.socket_name('/run/lock/a.lock') != lk.socket_name('/run/lock/b.lock')


# -- a real holder ------------------------------------------------------------

def me():
    info = lk.read_process(os.getpid())
    return {'pid': info['pid'], 'comm': info['comm'], 'starttime': info['starttime'], 'kind': 'given'}


def test_acquire_reenter_release_with_a_real_holder(lock_path):
    done = lk.acquire(lock_path, TOKEN, 'unit test', 5, 60, me())
    holder = done['holder']
    assert done['acquired'] and done['depth'] == 1 and holder['pid'] != os.getpid()
    assert lk.alive(holder['pid'], holder['starttime'])
    assert lk.read_holder(lock_path)['pid'] == holder['pid']  # the record is in the file
    again = lk.acquire(lock_path, TOKEN, 'nested', 5, 60, me())
    assert again['reentered'] and not again['acquired'] and again['depth'] == 2
    assert again['holder']['owner'] == 'unit test'
    assert lk.probe(lock_path, OTHER)[0] == 'busy'
    with pytest.raises(lk.LockBusy) as busy:
        lk.acquire(lock_path, OTHER, 'other run', 0.5, 60, me())
    assert 'holder pid %d' % holder['pid'] in str(busy.value) and busy.value.holder['pid'] == holder['pid']
    assert lk.release(lock_path, OTHER)['held'] is False  # another token cannot release it
    inner = lk.release(lock_path, TOKEN)
    assert inner == {'held': True, 'released': False, 'depth': 1, 'holder': holder}
    assert lk.alive(holder['pid'], holder['starttime'])
    outer = lk.release(lock_path, TOKEN)
    assert outer['released'] and outer['depth'] == 0
    assert not lk.alive(holder['pid'], holder['starttime'])
    with open(lock_path) as handle:
        assert handle.read() == ''  # emptied, not removed
    assert lk.probe(lock_path, OTHER)[0] == 'acquire'
    assert lk.release(lock_path, TOKEN) == {'held': False, 'released': False, 'depth': 0, 'holder': None}


def test_holder_ends_with_the_watched_process(lock_path):
    sleeper = subprocess.Popen(['sleep', '60'])
    try:
        info = lk.read_process(sleeper.pid)
        watch = {'pid': sleeper.pid, 'comm': info['comm'], 'starttime': info['starttime'], 'kind': 'given'}
        holder = lk.acquire(lock_path, TOKEN, 'watching', 5, 60, watch)['holder']
        assert lk.alive(holder['pid'], holder['starttime'])
        time.sleep(1.2)
        assert lk.alive(holder['pid'], holder['starttime'])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert lk.wait_gone(holder['pid'], holder['starttime'], 4)
    assert lk.acquire(lock_path, OTHER, 'next', 0, 60, me())['acquired']
    assert lk.release(lock_path, OTHER)['released']


def test_holder_ends_at_max_hold(lock_path):
    holder = lk.acquire(lock_path, TOKEN, 'short', 5, 1, me())['holder']
    assert holder['max_hold_until'] == lk.iso(holder['since_epoch'] + 1)
    assert lk.wait_gone(holder['pid'], holder['starttime'], 4)


def test_sigkill_of_the_holder_frees_the_lock(lock_path):
    holder = lk.acquire(lock_path, TOKEN, 'killed', 5, 60, me())['holder']
    os.kill(holder['pid'], signal.SIGKILL)
    assert lk.wait_gone(holder['pid'], holder['starttime'], 4)
    assert lk.probe(lock_path, OTHER) == ('acquire', None)  # the stale record names no live holder
    assert lk.acquire(lock_path, OTHER, 'next', 0, 60, me())['acquired']
    assert lk.release(lock_path, OTHER)['released']
