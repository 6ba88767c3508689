"""greenstalkd: an embedded server that speaks beanstalkd 1.12's protocol, in pure Python.

Run it with the ``greenstalkd`` command or ``python -m greenstalk.server``
(beanstalkd's flags), or from tests through :mod:`greenstalk.testing`.
"""
