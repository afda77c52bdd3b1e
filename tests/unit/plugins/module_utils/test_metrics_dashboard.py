"""docs/grafana/kvmlab-dashboard.json: valid JSON, a datasource variable, queries that parse and name real metrics."""
import json
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
DASHBOARD = os.path.join(ROOT, 'docs', 'grafana', 'kvmlab-dashboard.json')


def _dashboard():
    with open(DASHBOARD) as handle:
        return json.load(handle)


def _exprs(dash):
    out = []
    for panel in dash['panels']:
        for target in panel.get('targets', []):
            out.append(target['expr'])
    return out


def _family_names():
    sample = _metrics.build_families({}, {}, {}, {}, {}, [], {}, {}, 100, None, {}, None, {}, None, {}, None)
    names = set(f[0] for f in sample)
    names.update(f[0] for f in _metrics._self_families(1, 0, 0))
    return names


def test_datasource_is_a_variable_everywhere():
    dash = _dashboard()
    variables = dict((v['name'], v) for v in dash['templating']['list'])
    assert variables['datasource']['type'] == 'datasource' and variables['datasource']['query'] == 'prometheus'
    for panel in dash['panels']:
        if panel['type'] == 'row':
            continue
        assert panel['datasource']['uid'] == '${datasource}', panel['title']
        assert all(t['datasource']['uid'] == '${datasource}' for t in panel['targets'])
    ids = [p['id'] for p in dash['panels']]
    assert len(ids) == len(set(ids))


def test_panels_cover_the_issue():
    titles = [p['title'] for p in _dashboard()['panels']]
    for wanted in ('Entitled against achieved share per tier', 'vCPU wait per tier (CPU ready)',
                   'Reserve and guest pool busy', 'Memory saved by KSM and zram'):
        assert wanted in titles


def test_queries_name_only_metrics_the_collector_writes():
    names = _family_names()
    used = set()
    for expr in _exprs(_dashboard()):
        used.update(re.findall(r'\bkvmlab_[a-z_]+', expr))
    assert used and used <= names, used - names


def test_queries_parse(tmp_path):
    promtool = shutil.which('promtool')
    if not promtool:
        pytest.skip('promtool not installed (Debian package prometheus)')
    rules = {'groups': [{'name': 'dashboard', 'rules': []}]}
    for index, expr in enumerate(_exprs(_dashboard())):
        expr = expr.replace('$__rate_interval', '1m').replace('$instance', '.*').replace('$tier', '.*')
        rules['groups'][0]['rules'].append({'record': 'kvmlab:dashboard_%d' % index, 'expr': expr})
    path = tmp_path / 'rules.yml'
    path.write_text(json.dumps(rules))  # JSON is YAML
    check = subprocess.run([promtool, 'check', 'rules', str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
