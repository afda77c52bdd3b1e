"""Run a module's main() in-process with arguments and capture its JSON result."""
import contextlib
import io
import json

from ansible.module_utils.testing import patch_module_args


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
