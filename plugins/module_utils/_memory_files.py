# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The persistent files of the memory layer: their paths, header and text.

Pure functions; paths are relative to the files root."""

from __future__ import annotations

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import KSM_KNOBS, THP_KNOBS
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_sizes import MIB

GENERATOR_DROPIN = 'etc/systemd/zram-generator.conf.d/90-kvmlab-memory.conf'
UNIT_NAME = 'kvmlab-zram-swap.service'
UNIT_FILE = 'etc/systemd/system/' + UNIT_NAME
UNIT_WANTS = 'etc/systemd/system/swap.target.d/90-kvmlab-zram.conf'
TMPFILES_FILE = 'etc/tmpfiles.d/90-kvmlab-memory.conf'
SYSCTL_FILE = 'etc/sysctl.d/90-kvmlab-memory.conf'
ZRAM_FILES = (GENERATOR_DROPIN, UNIT_FILE, UNIT_WANTS)
MANAGED_FILES = ZRAM_FILES + (TMPFILES_FILE, SYSCTL_FILE)
#: Directories the module may create; the snapshot records whether they existed.
MANAGED_DIRS = ('etc/systemd/zram-generator.conf.d', 'etc/systemd/system/swap.target.d')

GENERATOR_BINARIES = ('usr/lib/systemd/system-generators/zram-generator',
                      'lib/systemd/system-generators/zram-generator')
GENERATOR_CONFIG_DIRS = ('usr/lib/systemd', 'usr/local/lib/systemd', 'etc/systemd', 'run/systemd')
TUNED_PROFILE_DIRS = ('etc/tuned', 'usr/lib/tuned', 'usr/lib/tuned/profiles')

#: Header of every file the module writes; also the marker by which it
#: recognises its own files when no snapshot says otherwise.
MANAGED_MARKER = '# Ansible managed (kvmlab.host_resources.memory_oversub)'
MANAGED_HEADER = MANAGED_MARKER + ': local edits are overwritten.'


# ---------------------------------------------------------------------------
# Files

def render_zram_generator(wanted_zram):
    """Drop-in for ``/etc/systemd/zram-generator.conf.d/`` defining the device."""
    lines = [MANAGED_HEADER,
             '# zram swap for host memory oversubscription (%s requested%s).'
             % (wanted_zram['sizing']['requested'], ', capped by max_ram_share' if wanted_zram['sizing']['capped']
                else ''),
             '[%s]' % wanted_zram['device'],
             'host-memory-limit = none',
             'zram-size = %d' % (wanted_zram['size_bytes'] // MIB)]
    if wanted_zram.get('algorithm'):
        lines.append('compression-algorithm = %s' % wanted_zram['algorithm'])
    lines.append('swap-priority = %d' % wanted_zram['priority'])
    return '\n'.join(lines) + '\n'


def render_zram_unit(wanted_zram, bins):
    """A oneshot service of ours that sets the device up as swap (no zram-generator)."""
    dev = '/dev/' + wanted_zram['device']
    setup = [bins['zramctl'], '--size', str(wanted_zram['size_bytes'])]
    if wanted_zram.get('algorithm'):
        setup += ['--algorithm', wanted_zram['algorithm']]
    setup.append(dev)
    return '\n'.join([
        MANAGED_HEADER,
        '[Unit]',
        'Description=Compressed swap on %s (kvmlab.host_resources)' % dev,
        'DefaultDependencies=no',
        'After=systemd-modules-load.service',
        'Before=swap.target shutdown.target',
        'Conflicts=shutdown.target',
        '',
        '[Service]',
        'Type=oneshot',
        'RemainAfterExit=yes',
        'ExecStartPre=%s zram' % bins['modprobe'],
        'ExecStartPre=%s settle' % bins['udevadm'],
        'ExecStart=%s' % ' '.join(setup),
        'ExecStart=%s -L %s %s' % (bins['mkswap'], wanted_zram['device'], dev),
        'ExecStart=%s --priority %d --discard %s' % (bins['swapon'], wanted_zram['priority'], dev),
        'ExecStop=%s %s' % (bins['swapoff'], dev),
        'ExecStop=%s --reset %s' % (bins['zramctl'], dev),
        '',
    ])


def render_unit_wants(unit_name):
    """Drop-in for ``swap.target`` that pulls our zram service in at boot."""
    return '%s\n[Unit]\nWants=%s\n' % (MANAGED_HEADER, unit_name)


def render_tmpfiles(wanted):
    """tmpfiles.d lines that write the THP and KSM values at boot, or None."""
    lines = []
    for knob in THP_KNOBS:
        if knob in wanted.get('thp', {}):
            lines.append('w /sys/kernel/mm/transparent_hugepage/%s - - - - %s' % (knob, wanted['thp'][knob]))
    for knob in KSM_KNOBS:
        if knob in wanted.get('ksm', {}):
            lines.append('w /sys/kernel/mm/ksm/%s - - - - %s' % (knob, wanted['ksm'][knob]))
    if not lines:
        return None
    return '\n'.join([MANAGED_HEADER, '# THP and KSM for host memory oversubscription, applied at boot.']
                     + lines) + '\n'


def render_sysctl(wanted):
    """sysctl.d lines for the vm settings, or None."""
    settings = wanted.get('sysctl') or {}
    if not settings:
        return None
    return '\n'.join([MANAGED_HEADER] + ['%s = %s' % (k, settings[k]) for k in sorted(settings)]) + '\n'


def is_managed(text):
    """Whether a file's text carries this module's header."""
    return text is not None and MANAGED_MARKER in text
