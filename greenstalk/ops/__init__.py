"""Operations: a Prometheus exporter and a web console for beanstalkd servers.

``greenstalk exporter`` (:mod:`greenstalk.ops.exporter`) serves ``/metrics``
for one or several servers; ``greenstalk web`` (:mod:`greenstalk.ops.web`)
is a console to watch and operate them from a browser. Both run on the
asyncio client, :mod:`greenstalk.aio`, and need the ``ops`` extra
(``pip install 'greenstalk[ops]'``: prometheus_client and aiohttp). This
package itself imports neither: only its ``exporter`` and ``web`` modules do.
"""
