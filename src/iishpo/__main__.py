import sys

from iishpo.worker import run_via_worker

code = run_via_worker(sys.argv[1:])  # a training command, handed to the warm worker if one runs
if code is None:
    from iishpo.cli import main

    code = main()
sys.exit(code)
