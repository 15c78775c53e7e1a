"""The uvicorn internals ``api.uvicorn_coupling`` leans on are still there, in the version installed.

The behaviour they carry is tested end to end elsewhere (the head cap and the 1009 close in
``tests/security/test_bounds.py``, the direct frame writes in ``tests/api/feed``); this test names what moved.
"""

import uvicorn

from api.uvicorn_coupling import TESTED, coupling_problems


def test_uvicorn_internals_are_where_the_coupling_expects_them():
    problems = coupling_problems(uvicorn.__version__)
    assert not problems, "uvicorn changed underneath api/uvicorn_coupling.py:\n" + "\n".join(problems)


def test_a_version_outside_the_tested_range_is_named():
    newer = f"{TESTED[1][0]}.{TESTED[1][1]}.0"
    problems = coupling_problems(newer)
    assert any(newer in problem and "tested range" in problem for problem in problems)
