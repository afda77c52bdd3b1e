"""Run a module's main() in-process with arguments and capture its JSON result."""
import contextlib
import io
import json

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19: AnsibleModule reads basic._ANSIBLE_ARGS
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args=None):
        """The module arguments AnsibleModule() sees inside the block (ansible-core 2.16-2.18)."""
        previous = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': dict(args or {})}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = previous


def run_module(main, args, check_mode=False, diff=False):
    """Return the module's result dict (with ``failed`` when it failed)."""
    params = dict(args)
    if check_mode:
        params['_ansible_check_mode'] = True
    if diff:
        params['_ansible_diff'] = True
    out = io.StringIO()
    with patch_module_args(params), contextlib.redirect_stdout(out):
        try:
            main()
        except SystemExit:
            pass
    return json.loads(out.getvalue())
