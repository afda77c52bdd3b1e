# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contention_report filter; a thin face of plugin_utils._contention_report."""

from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.plugin_utils._contention_report import (
    render_markdown,
    render_svg,
)

FORMATS = ('markdown', 'svg', 'json')


def contention_report(report, fmt='markdown', command=None, title=None):
    """Render a cpu_contention_measure report as Markdown, an SVG chart or JSON text."""
    if not isinstance(report, dict) or 'scenarios' not in report:
        raise AnsibleFilterError('contention_report: expects the report of cpu_contention_measure, got %s'
                                 % type(report).__name__)
    if fmt not in FORMATS:
        raise AnsibleFilterError('contention_report: format must be one of %s, got %s' % (', '.join(FORMATS), fmt))
    try:
        if fmt == 'markdown':
            return render_markdown(report, command=command, title=title)
        if fmt == 'svg':
            return render_svg(report, title=title)
        data = dict(report)
        if command:
            data['command'] = command
        return json.dumps(data, indent=2, sort_keys=True) + '\n'
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError('contention_report: malformed report (%s)' % exc)


class FilterModule(object):
    """kvmlab.host_resources contention report filter."""

    def filters(self):
        return {'contention_report': contention_report}
