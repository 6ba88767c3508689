"""The beanstalkd protocol without I/O: commands to bytes, bytes to replies.

Nothing in this package touches a socket, a clock or an event loop, so the
sync client, the asyncio client and the server can all share it.
"""
